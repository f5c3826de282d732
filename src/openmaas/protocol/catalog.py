"""Wire shapes of the catalog API, shared by the server and the Python SDK (no FastAPI).

Example::

    page = CatalogListOut.model_validate(response.json())
    [e.name for e in page.data if e.available and not e.registered]
"""

from __future__ import annotations

from typing import Literal

from openmaas.protocol.common import Response


class CatalogSourceOut(Response):
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


class CatalogEntryOut(Response):
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


class CatalogListOut(Response):
    object: Literal["list"] = "list"
    data: list[CatalogEntryOut]
