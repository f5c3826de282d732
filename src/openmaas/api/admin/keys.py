"""Admin API: projects, API keys and their limits. Every change lands in the audit log.

Creating, listing and revoking keys and changing limits need the `admin` scope; any valid
key may ask `GET /v1/keys/self` who it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, status

from openmaas.api.auditor import AuditorDep
from openmaas.api.convert.admin import key_out, project_out
from openmaas.api.deps import PrincipalDep, ServicesDep, requires
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.params import KeyIdPath
from openmaas.auth.policy import LimitPolicy
from openmaas.auth.scopes import Scope
from openmaas.protocol.admin import (
    CreatedKeyOut,
    KeyCreate,
    KeyOut,
    LimitsUpdate,
    ProjectCreate,
    ProjectOut,
    WhoAmIOut,
)
from openmaas.protocol.common import ListOut

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1", tags=["admin"])
_ADMIN = [Depends(requires(Scope.ADMIN))]


def _limits(raw: dict[str, Any]) -> dict[str, Any]:
    return LimitPolicy.from_json(raw).to_json()


# -- projects -------------------------------------------------------------------------------


@router.post("/projects", status_code=status.HTTP_201_CREATED, dependencies=_ADMIN)
def create_project(
    body: ProjectCreate, services: ServicesDep, who: PrincipalDep, auditor: AuditorDep
) -> ProjectOut:
    limits = _limits(body.limits)
    auth = services.auth
    project = auth.create_project(body.name, body.description, caller=who, actor=who.actor)
    if limits:
        auth.set_project_limits(project.name, limits, caller=who)
        project = auth.get_project(project.name, caller=who)
    out = project_out(project)
    auditor.record("project.create", f"projects/{project.name}", after=_dump(out))
    return out


@router.get("/projects", dependencies=_ADMIN)
def list_projects(services: ServicesDep, who: PrincipalDep) -> ListOut[ProjectOut]:
    return ListOut(data=[project_out(p) for p in services.auth.list_projects(caller=who)])


@router.get("/projects/{name}", dependencies=_ADMIN)
def get_project(name: str, services: ServicesDep, who: PrincipalDep) -> ProjectOut:
    return project_out(services.auth.get_project(name, caller=who))


@router.put("/projects/{name}/limits", dependencies=_ADMIN)
def set_project_limits(
    name: str, body: LimitsUpdate, services: ServicesDep, who: PrincipalDep, auditor: AuditorDep
) -> ProjectOut:
    before, after = services.auth.set_project_limits(name, _limits(body.limits), caller=who)
    services.authenticator.forget(project=name)
    if before != after:  # a change that changes nothing records nothing
        auditor.record("project.limits", f"projects/{name}", before=before, after=after)
    return project_out(services.auth.get_project(name, caller=who))


# -- keys -----------------------------------------------------------------------------------


@router.get("/keys/self")
async def who_am_i(who: PrincipalDep) -> WhoAmIOut:
    return WhoAmIOut(
        project=who.project,
        prefix=who.actor,
        scopes=[scope.value for scope in who.scopes],
        expires_at=who.expires_at,
    )


@router.post("/keys", status_code=status.HTTP_201_CREATED, dependencies=_ADMIN)
def create_key(
    body: KeyCreate, services: ServicesDep, who: PrincipalDep, auditor: AuditorDep
) -> CreatedKeyOut:
    limits = _limits(body.limits)
    key, plaintext = services.auth.create_key(
        body.project,
        body.name,
        body.scopes,
        expires_at=body.expires_at,
        caller=who,
        actor=who.actor,
    )
    if limits:
        services.auth.set_key_limits(key.id, limits, caller=who)
        key = services.auth.get_key(key.id, caller=who)
    out = key_out(key)
    auditor.record("key.create", f"keys/{key.id}", after=_dump(out))
    return CreatedKeyOut(**out.model_dump(), key=plaintext)


@router.get("/keys", dependencies=_ADMIN)
def list_keys(
    services: ServicesDep, who: PrincipalDep, project: str | None = Query(default=None)
) -> ListOut[KeyOut]:
    return ListOut(data=[key_out(k) for k in services.auth.list_keys(project, caller=who)])


@router.get("/keys/{key_id}", dependencies=_ADMIN)
def get_key(key_id: KeyIdPath, services: ServicesDep, who: PrincipalDep) -> KeyOut:
    return key_out(services.auth.get_key(key_id, caller=who))


@router.post("/keys/{key_id}/revoke", dependencies=_ADMIN)
def revoke_key(
    key_id: KeyIdPath, services: ServicesDep, who: PrincipalDep, auditor: AuditorDep
) -> KeyOut:
    before = key_out(services.auth.get_key(key_id, caller=who))
    after = key_out(services.auth.revoke_key(key_id, caller=who, actor=who.actor))
    services.authenticator.forget(key_id=key_id)
    if before.revoked_at is None:  # revoking twice changes nothing and records nothing
        auditor.record("key.revoke", f"keys/{key_id}", before=_dump(before), after=_dump(after))
    return after


@router.put("/keys/{key_id}/limits", dependencies=_ADMIN)
def set_key_limits(
    key_id: KeyIdPath,
    body: LimitsUpdate,
    services: ServicesDep,
    who: PrincipalDep,
    auditor: AuditorDep,
) -> KeyOut:
    before, after = services.auth.set_key_limits(key_id, _limits(body.limits), caller=who)
    services.authenticator.forget(key_id=key_id)
    if before != after:
        auditor.record("key.limits", f"keys/{key_id}", before=before, after=after)
    return key_out(services.auth.get_key(key_id, caller=who))


def _dump(out: ProjectOut | KeyOut) -> dict[str, Any]:
    return out.model_dump(mode="json")
