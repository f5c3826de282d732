"""Task contracts: one module per task (params, result type, the runtime protocol a model
implements to serve it, cache policy, usage, v2 tensors), and the catalogue of servable tasks.

Imports only core (`errors`, numpy, the standard library): never registry, serving, runtimes
or api, which all build on it.
"""
