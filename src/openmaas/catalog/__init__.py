"""The built-in model catalog: well-known models that ship as installable Python packages.

Example::

    from openmaas.catalog import CatalogService

    catalog = CatalogService(registry)
    for entry in catalog.entries():
        print(entry.name, entry.available, entry.registered)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openmaas.catalog.definitions import CatalogDefinition, CatalogSource, load_catalog
    from openmaas.catalog.service import CatalogEntry, CatalogService

__all__ = ["CatalogDefinition", "CatalogEntry", "CatalogService", "CatalogSource", "load_catalog"]

# Resolved on first use, so that importing the catalog's definitions does not pull in the
# registry service and its database layer.
_HOMES = {
    "CatalogDefinition": "openmaas.catalog.definitions",
    "CatalogSource": "openmaas.catalog.definitions",
    "load_catalog": "openmaas.catalog.definitions",
    "CatalogEntry": "openmaas.catalog.service",
    "CatalogService": "openmaas.catalog.service",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
