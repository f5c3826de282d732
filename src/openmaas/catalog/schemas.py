"""Wire shapes of the catalog API, shared by the server and the Python SDK (no FastAPI).

Example::

    page = CatalogListOut.model_validate(response.json())
    [e.name for e in page.data if e.available and not e.registered]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from openmaas.catalog.service import CatalogEntry


class _Response(BaseModel):
    # Responses ignore unknown fields so an older SDK keeps working against a newer server.
    model_config = ConfigDict(extra="ignore")


class CatalogSourceOut(_Response):
    """Where an entry's files come from: an installed PyPI package, a Debian package (with the
    command that must be on PATH) or a Hub repository."""

    type: Literal["pypi", "debian", "hub"]
    distribution: str | None = None
    package: str | None = None
    path: str | None = None
    role: str | None = None
    installed_version: str | None = None  # null when not installed (or a Hub source)
    repo_id: str | None = None
    command: str | None = None


class CatalogEntryOut(_Response):
    object: Literal["catalog_entry"] = "catalog_entry"
    name: str
    task: str
    runtime: str
    description: str
    license: str | None
    sources: list[CatalogSourceOut]
    available: bool
    unavailable_reason: str | None
    registered: bool

    @classmethod
    def from_entity(cls, entry: CatalogEntry) -> CatalogEntryOut:
        return cls(
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


class CatalogListOut(_Response):
    object: Literal["list"] = "list"
    data: list[CatalogEntryOut]
