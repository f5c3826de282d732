"""Request and response bodies of the admin API: projects and API keys.

The one response that carries a key's plaintext is `CreatedKeyOut`, answered once by
`POST /v1/keys`; no other body has a field for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from openmaas.auth.entities import ApiKey, Project
from openmaas.registry.schemas import Response, Schema


class ProjectCreate(Schema):
    name: str
    description: str = Field(default="", max_length=4096)
    limits: dict[str, Any] = Field(default_factory=dict)


class LimitsUpdate(Schema):
    """The complete limits: fields left out become unlimited (or inherit, on a key)."""

    limits: dict[str, Any]


class KeyCreate(Schema):
    name: str
    scopes: list[str] = Field(min_length=1)
    project: str = "default"
    expires_at: datetime | None = None
    limits: dict[str, Any] = Field(default_factory=dict)


class ProjectOut(Response):
    object: Literal["project"] = "project"
    name: str
    description: str
    created_at: datetime
    created_by: str
    limits: dict[str, Any]

    @classmethod
    def from_entity(cls, project: Project) -> ProjectOut:
        return cls(
            name=project.name,
            description=project.description,
            created_at=project.created_at,
            created_by=project.created_by,
            limits=dict(project.limits),
        )


class KeyOut(Response):
    object: Literal["api_key"] = "api_key"
    id: int
    project: str
    name: str
    prefix: str  # "om-<prefix>": the public part, for telling keys apart
    scopes: list[str]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None
    limits: dict[str, Any]

    @classmethod
    def from_entity(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            project=key.project,
            name=key.name,
            prefix=f"om-{key.prefix}",
            scopes=[scope.value for scope in key.scopes],
            created_at=key.created_at,
            created_by=key.created_by,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            revoked_by=key.revoked_by,
            last_used_at=key.last_used_at,
            limits=dict(key.limits),
        )


class CreatedKeyOut(KeyOut):
    key: str  # the plaintext: shown in this answer only


class WhoAmIOut(Response):
    object: Literal["principal"] = "principal"
    project: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
