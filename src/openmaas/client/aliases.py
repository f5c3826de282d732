"""Aliases of a registered model: set, delete, history, rollback.

Example::

    client.set_alias("sentiment", "production", 2, reason="better F1")
    client.rollback("sentiment", "production")  # back to what it pointed at before
"""

from __future__ import annotations

from openmaas.client.models import model_path
from openmaas.client.resource import Resource, segment
from openmaas.protocol.registry import AliasEventOut, AliasMoveOut


class AliasesResource(Resource):
    """`/v1/registry/models/{name}/aliases`."""

    def aliases(self, name: str) -> dict[str, int]:
        response = self._request("GET", model_path(name, "/aliases"))
        data = response.json()
        return {str(alias): int(version) for alias, version in data.items()}

    def set_alias(self, name: str, alias: str, version: int, reason: str = "") -> AliasMoveOut:
        """Point `alias` at `version`; the result's `event` is None when nothing moved."""
        body = {"version": version, "reason": reason}
        return self._one("PUT", _alias_path(name, alias), AliasMoveOut, json=body)

    def delete_alias(self, name: str, alias: str, reason: str = "") -> AliasMoveOut:
        query = {"reason": reason} if reason else {}
        return self._one("DELETE", _alias_path(name, alias, **query), AliasMoveOut)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEventOut]:
        """Alias moves of the model, oldest first; only those of `alias` when given."""
        if alias is None:
            return self._list("GET", model_path(name, "/aliases/history"), AliasEventOut)
        return self._list("GET", _alias_path(name, alias, "/history"), AliasEventOut)

    def rollback(self, name: str, alias: str, reason: str = "") -> AliasMoveOut:
        """Move `alias` back to its previous target (409 `nothing_to_roll_back` if none)."""
        path = _alias_path(name, alias, "/rollback")
        return self._one("POST", path, AliasMoveOut, json={"reason": reason})


def _alias_path(name: str, alias: str, rest: str = "", **query: str) -> str:
    return model_path(name, f"/aliases/{segment(alias)}{rest}", **query)
