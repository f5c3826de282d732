"""Identity: projects (tenants), API keys (shown once, stored hashed) and scopes."""

from openmaas.auth.entities import DEFAULT_PROJECT, ApiKey, Principal, Project
from openmaas.auth.scopes import Scope, require
from openmaas.auth.service import AuthService

__all__ = [
    "DEFAULT_PROJECT",
    "ApiKey",
    "AuthService",
    "Principal",
    "Project",
    "Scope",
    "require",
]
