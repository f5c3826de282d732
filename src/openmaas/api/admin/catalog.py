"""Admin API for the built-in model catalog: what is available here, and what is registered.

`POST /v1/catalog/{name}/register` (admin keys) registers an entry whose package was installed
after the server's first start, without a restart.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from openmaas.api.admin.registry import audit_registration
from openmaas.api.auditor import AuditorDep
from openmaas.api.convert.catalog import catalog_entry_out
from openmaas.api.convert.registry import version_out
from openmaas.api.deps import CallerDep, CatalogDep, caller, requires
from openmaas.api.json_body import StrictJSONRoute
from openmaas.auth.scopes import Scope
from openmaas.protocol.catalog import CatalogEntryOut, CatalogListOut
from openmaas.protocol.registry import VersionOut
from openmaas.registry.names import DEFAULT_ALIAS

router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/v1/catalog",
    tags=["catalog"],
    dependencies=[Depends(caller)],
)


@router.get("")
def list_catalog(catalog: CatalogDep) -> CatalogListOut:
    return CatalogListOut(data=[catalog_entry_out(e) for e in catalog.entries()])


@router.get("/{name}")
def get_catalog_entry(name: str, catalog: CatalogDep) -> CatalogEntryOut:
    return catalog_entry_out(catalog.get(name))


# Catalog models are public: like every change to a public model, registering one is an
# admin's.
@router.post(
    "/{name}/register",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(requires(Scope.ADMIN))],
)
def register_catalog_entry(
    name: str, catalog: CatalogDep, who: CallerDep, auditor: AuditorDep
) -> VersionOut:
    version = catalog.register(name, actor=who.actor)
    audit_registration(auditor, version, DEFAULT_ALIAS)
    return version_out(version)
