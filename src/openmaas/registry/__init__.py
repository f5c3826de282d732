"""Model registry: immutable versions, moving aliases with history, verified artifacts."""
