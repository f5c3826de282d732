"""Aliases of a registered model: set, delete, history, rollback, traffic splits.

Example::

    client.set_alias("sentiment", "production", 2, reason="better F1")
    client.rollback("sentiment", "production")  # back to what it pointed at before
    client.set_traffic("sentiment", "production", {1: 90, 2: 10}, sticky="x-user-id",
                       rollback={"max_error_rate_delta": 0.02, "min_requests": 200})
    client.traffic("sentiment", "production").stats["2"].p99_ms
    client.traffic_splits("sentiment")  # every alias's split
    client.end_traffic("sentiment", "production")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openmaas.client.models import model_path
from openmaas.client.resource import Resource, segment
from openmaas.protocol.registry import AliasEventOut, AliasMoveOut
from openmaas.protocol.rollout import (
    PolicyOut,
    PolicyRequest,
    RollbackIn,
    TrafficOut,
    TrafficRequest,
)


class AliasesResource(Resource):
    """`/v1/registry/models/{name}/aliases`."""

    def aliases(self, name: str) -> dict[str, int]:
        response = self._request("GET", model_path(name, "/aliases"))
        data = response.json()
        return {str(alias): int(version) for alias, version in data.items()}

    def set_alias(
        self, name: str, alias: str, version: int, reason: str = "", *, force: bool = False
    ) -> AliasMoveOut:
        """Point ALIAS at VERSION. An alias with an evaluation gate moves only when the
        version holds up (else `APIError` 409 `gate_failed` with both scores); an admin key
        may `force` the move with a reason."""
        body: dict[str, Any] = {"version": version, "reason": reason}
        if force:
            body["force"] = True
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

    def set_traffic(
        self,
        name: str,
        alias: str,
        versions: Mapping[int | str, int],
        *,
        sticky: str | None = None,
        shadow: int | None = None,
        shadow_share: float = 1.0,
        rollback: RollbackIn | Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> TrafficOut:
        """Split ALIAS's requests over `versions` (version -> weight; the alias's own
        version must be one); `sticky` names a header that keeps a user on one version,
        `shadow` a version that gets a mirror of `shadow_share` of the requests, `rollback`
        when a candidate is taken out by itself."""
        body = TrafficRequest(
            versions={str(version): weight for version, weight in versions.items()},
            sticky=sticky,
            shadow=shadow,
            shadow_share=shadow_share,
            rollback=RollbackIn.model_validate(rollback) if rollback is not None else None,
            reason=reason,
        )
        payload = body.model_dump(mode="json", exclude_none=True)
        return self._one("PUT", _alias_path(name, alias, "/traffic"), TrafficOut, json=payload)

    def traffic(self, name: str, alias: str) -> TrafficOut:
        """ALIAS's split, with what each version did on the server that answers."""
        return self._one("GET", _alias_path(name, alias, "/traffic"), TrafficOut)

    def traffic_splits(self, name: str) -> list[TrafficOut]:
        """Every active split of the model's aliases, each with its figures."""
        return self._list("GET", model_path(name, "/traffic"), TrafficOut)

    def end_traffic(self, name: str, alias: str, reason: str = "") -> TrafficOut:
        """End the split: every request for ALIAS goes to its own version again."""
        query = {"reason": reason} if reason else {}
        return self._one("DELETE", _alias_path(name, alias, "/traffic", **query), TrafficOut)

    def set_policy(
        self,
        name: str,
        alias: str,
        eval_file: str,
        *,
        metric: str = "macro_f1",
        min_delta: float = 0.0,
        reason: str = "",
    ) -> PolicyOut:
        """Gate every later move of ALIAS on `metric` over `eval_file`: the candidate must
        score at least the current version's plus `min_delta`."""
        body = PolicyRequest(eval_file=eval_file, metric=metric, min_delta=min_delta, reason=reason)
        path = _alias_path(name, alias, "/policy")
        return self._one("PUT", path, PolicyOut, json=body.model_dump(mode="json"))

    def policy(self, name: str, alias: str) -> PolicyOut:
        return self._one("GET", _alias_path(name, alias, "/policy"), PolicyOut)

    def policies(self, name: str) -> list[PolicyOut]:
        """Every evaluation gate of the model's aliases."""
        return self._list("GET", model_path(name, "/policies"), PolicyOut)

    def delete_policy(self, name: str, alias: str, reason: str = "") -> PolicyOut:
        query = {"reason": reason} if reason else {}
        return self._one("DELETE", _alias_path(name, alias, "/policy", **query), PolicyOut)


def _alias_path(name: str, alias: str, rest: str = "", **query: str) -> str:
    return model_path(name, f"/aliases/{segment(alias)}{rest}", **query)
