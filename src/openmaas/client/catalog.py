"""The built-in catalog: which well-known models this server can offer, and whether it does.

Example::

    [entry.name for entry in client.catalog() if entry.available and not entry.registered]
    client.register_catalog_entry("apertium-eng-spa")  # installed since the first start
"""

from __future__ import annotations

from openmaas.client.resource import Resource, segment
from openmaas.protocol.catalog import CatalogEntryOut
from openmaas.protocol.registry import VersionOut


class CatalogResource(Resource):
    """`/v1/catalog`."""

    def catalog(self) -> list[CatalogEntryOut]:
        """The built-in catalog: which models this server can offer, and whether it does."""
        return self._list("GET", "/v1/catalog", CatalogEntryOut)

    def catalog_entry(self, name: str) -> CatalogEntryOut:
        return self._one("GET", f"/v1/catalog/{segment(name)}", CatalogEntryOut)

    def register_catalog_entry(self, name: str) -> VersionOut:
        """Register a catalog entry now (an admin key): one whose package was installed after
        the server's first start. 409 if it is registered, 400 if still unavailable."""
        return self._one("POST", f"/v1/catalog/{segment(name)}/register", VersionOut)
