"""Admin API for the built-in model catalog: what is available here, and what is registered."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from openmaas.api.convert.catalog import catalog_entry_out
from openmaas.api.deps import CatalogDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.protocol.catalog import CatalogEntryOut, CatalogListOut

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
