"""Projects and API keys as wire models (never with a key's secret or hash)."""

from __future__ import annotations

from openmaas.auth.entities import ApiKey, Project
from openmaas.protocol.admin import KeyOut, ProjectOut


def project_out(project: Project) -> ProjectOut:
    return ProjectOut(
        name=project.name,
        description=project.description,
        created_at=project.created_at,
        created_by=project.created_by,
        limits=dict(project.limits),
    )


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
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
