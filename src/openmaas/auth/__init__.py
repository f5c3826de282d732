"""Identity: projects (tenants), API keys (shown once, stored hashed) and scopes.

The service lives in `openmaas.auth.service`; this package's root stays light so the SDK and
CLI can use the records without importing the store.
"""

from openmaas.auth.entities import DEFAULT_PROJECT, ApiKey, Principal, Project
from openmaas.auth.scopes import Scope, require

__all__ = [
    "DEFAULT_PROJECT",
    "ApiKey",
    "Principal",
    "Project",
    "Scope",
    "require",
]
