"""Server entities to wire models: the one place the API turns what a service returns into the
JSON bodies of `openmaas.protocol` (which, shared with the SDK, knows nothing of the server).

One module per resource area; each function is named after the wire model it builds.

Example::

    from openmaas.api.convert.registry import version_out

    return version_out(registry.get_version(name, version))
"""
