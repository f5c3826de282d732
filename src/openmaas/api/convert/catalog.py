"""Catalog entries as wire models."""

from __future__ import annotations

from openmaas.catalog.service import CatalogEntry
from openmaas.protocol.catalog import CatalogEntryOut, CatalogSourceOut


def catalog_entry_out(entry: CatalogEntry) -> CatalogEntryOut:
    return CatalogEntryOut(
        name=entry.name,
        task=entry.task,
        runtime=entry.runtime,
        description=entry.description,
        license=entry.license,
        sources=[
            CatalogSourceOut(
                type=s.type if s.type in ("hub", "debian") else "pypi",
                distribution=s.distribution,
                package=s.package,
                path=s.path,
                role=s.role if s.type != "hub" else None,
                installed_version=s.installed_version,
                repo_id=s.repo_id,
                command=s.command,
            )
            for s in entry.sources
        ],
        available=entry.available,
        unavailable_reason=entry.unavailable_reason,
        registered=entry.registered,
    )
