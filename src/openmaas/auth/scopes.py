"""What a key may do. `admin` implies every other scope.

Example::

    Scope.ADMIN.covers(Scope.TRAINING)  # -> True
    require(principal, Scope.MODELS_WRITE)  # raises PermissionDenied without it
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING

from openmaas.errors import InvalidRequest, PermissionDenied

if TYPE_CHECKING:
    from openmaas.auth.entities import Principal


class Scope(StrEnum):
    INFERENCE = "inference"
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    TRAINING = "training"
    ADMIN = "admin"

    def covers(self, required: Scope) -> bool:
        return self is Scope.ADMIN or self is required


def scopes_cover(scopes: Iterable[Scope], required: Scope) -> bool:
    return any(scope.covers(required) for scope in scopes)


def parse_scopes(values: Iterable[str]) -> tuple[Scope, ...]:
    """Validate scope names; the result is deduplicated, in the enum's order."""
    wanted = set()
    for value in values:
        try:
            wanted.add(Scope(value))
        except ValueError:
            known = ", ".join(scope.value for scope in Scope)
            raise InvalidRequest(
                f"unknown scope {value!r} (scopes: {known})", param="scopes"
            ) from None
    if not wanted:
        raise InvalidRequest("a key needs at least one scope", param="scopes")
    return tuple(scope for scope in Scope if scope in wanted)


def require(principal: Principal, scope: Scope) -> None:
    """Raise PermissionDenied unless the principal's key carries `scope` (or `admin`)."""
    if not scopes_cover(principal.scopes, scope):
        raise PermissionDenied(
            f"this API key lacks the {scope.value!r} scope",
            param="scope",
            code="insufficient_scope",
        )
