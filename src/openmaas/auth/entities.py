"""What the auth service hands out: frozen records, independent of the SQL rows behind them.

No record carries a key's secret or hash; the plaintext exists once, in `create_key`'s answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from openmaas.auth.scopes import Scope

DEFAULT_PROJECT = "default"


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    description: str
    created_at: datetime
    created_by: str
    limits: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    project: str
    name: str
    prefix: str  # public; shown as `om-<prefix>_…` to identify the key
    scopes: tuple[Scope, ...]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None
    limits: Mapping[str, Any] = field(default_factory=dict)

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the authenticated key and its project."""

    project: str
    key_id: int
    prefix: str
    scopes: tuple[Scope, ...]
    expires_at: datetime | None = None
    # Rate limits and quotas as stored (see auth.policy): the project's, then the key's own.
    project_limits: Mapping[str, Any] = field(default_factory=dict)
    key_limits: Mapping[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        """How this caller is named in histories and the audit log: the key's public part."""
        return f"om-{self.prefix}"


# The server's own work (start-up, the built-in catalog, job workers acting for the system)
# runs as this explicit principal: an admin of no tenant's key. Services never infer it from
# a missing caller.
SYSTEM = Principal(project=DEFAULT_PROJECT, key_id=0, prefix="system", scopes=(Scope.ADMIN,))


def project_member(project: str) -> Principal:
    """The server acting for `project` with no more than a tenant's reach there (no key):
    what it resolves and sees is what that project's keys would."""
    return Principal(project=project, key_id=0, prefix="system", scopes=(Scope.MODELS_READ,))
