"""Projects and API keys (an `admin` key), and who the current key is.

Example::

    client.create_project("acme", limits={"requests_per_minute": 600})
    key = client.create_key("ci", ["inference"], project="acme")
    key.key  # the plaintext: this answer is its only copy
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from openmaas.client.resource import Resource, segment
from openmaas.protocol.admin import CreatedKeyOut, KeyOut, ProjectOut, WhoAmIOut


class AdminResource(Resource):
    """`/v1/projects` and `/v1/keys`."""

    def create_project(
        self, name: str, description: str = "", limits: Mapping[str, int | None] | None = None
    ) -> ProjectOut:
        body = {"name": name, "description": description, "limits": dict(limits or {})}
        return self._one("POST", "/v1/projects", ProjectOut, json=body)

    def list_projects(self) -> list[ProjectOut]:
        return self._list("GET", "/v1/projects", ProjectOut)

    def set_project_limits(self, name: str, limits: Mapping[str, int | None]) -> ProjectOut:
        """Replace a project's rate limits and quotas; fields left out become unlimited."""
        path = f"/v1/projects/{segment(name)}/limits"
        return self._one("PUT", path, ProjectOut, json={"limits": dict(limits)})

    def create_key(
        self,
        name: str,
        scopes: list[str],
        project: str = "default",
        expires_at: datetime | None = None,
        limits: Mapping[str, int | None] | None = None,
    ) -> CreatedKeyOut:
        """Create an API key; `.key` in the answer is its only copy."""
        body: dict[str, Any] = {
            "name": name,
            "scopes": scopes,
            "project": project,
            "limits": dict(limits or {}),
        }
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        return self._one("POST", "/v1/keys", CreatedKeyOut, json=body)

    def list_keys(self, project: str | None = None) -> list[KeyOut]:
        params = {"project": project} if project else {}
        return self._list("GET", "/v1/keys", KeyOut, params=params)

    def revoke_key(self, key_id: int) -> KeyOut:
        return self._one("POST", f"/v1/keys/{segment(key_id)}/revoke", KeyOut)

    def set_key_limits(self, key_id: int, limits: Mapping[str, int | None]) -> KeyOut:
        """Replace a key's own overrides of its project's limits."""
        path = f"/v1/keys/{segment(key_id)}/limits"
        return self._one("PUT", path, KeyOut, json={"limits": dict(limits)})

    def whoami(self) -> WhoAmIOut:
        """The project and scopes of the key this client sends."""
        return self._one("GET", "/v1/keys/self", WhoAmIOut)
