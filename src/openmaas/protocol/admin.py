"""Request and response bodies of the admin API: projects and API keys.

The one response that carries a key's plaintext is `CreatedKeyOut`, answered once by
`POST /v1/keys`; no other body has a field for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from openmaas.protocol.common import Response, Schema


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


class CreatedKeyOut(KeyOut):
    key: str  # the plaintext: shown in this answer only


class WhoAmIOut(Response):
    object: Literal["principal"] = "principal"
    project: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
