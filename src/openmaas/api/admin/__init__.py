"""Our admin API, one module per resource: the model registry and catalog, projects and API
keys, usage and the audit log, datasets, and training jobs (`/v1/training/jobs`, with
everything a recipe takes). The scopes each router needs are set in `api/app.py`."""
