"""Who may see which model: its own project, every project when public, admins always.

The request's principal is set once by the auth dependency (`acting_as`); the engine and
the registry routes ask `check_visible` before they use a model, and anything hidden is
reported exactly like a model that does not exist.

Example::

    with acting_as(principal):
        check_visible(version.model, version.project, version.public)  # or ModelNotFound
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from openmaas.auth.entities import Principal
from openmaas.auth.scopes import Scope, require
from openmaas.errors import MissingCaller, ModelNotFound, PermissionDenied

# None: the server itself (start-up, the catalog, tests of services): sees everything.
_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "openmaas_principal", default=None
)


def require_caller(caller: Principal | None) -> Principal:
    """The caller, or MissingCaller: every service entry point that reads or changes tenant
    data starts with this, so a lost caller is refused instead of seeing everything."""
    if not isinstance(caller, Principal):
        raise MissingCaller("this operation needs an explicit caller", param="caller")
    return caller


def set_principal(principal: Principal | None) -> None:
    """Bind the caller to the current request's context."""
    _current.set(principal)


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


def current_principal() -> Principal | None:
    return _current.get()


def is_admin(principal: Principal | None) -> bool:
    return principal is None or Scope.ADMIN in principal.scopes


def can_see(project: str, public: bool, principal: Principal | None = None) -> bool:
    who = principal if principal is not None else _current.get()
    return is_admin(who) or public or (who is not None and who.project == project)


def can_change(project: str, principal: Principal | None = None) -> bool:
    """Only the owning project (and admins) change a model, public or not."""
    who = principal if principal is not None else _current.get()
    return is_admin(who) or (who is not None and who.project == project)


def check_visible(name: str, project: str, public: bool) -> None:
    if not can_see(project, public):
        raise ModelNotFound(f"model {name!r} not found", param="model")


def check_changeable(name: str, project: str, public: bool) -> None:
    """Hidden models are 'not found'; visible ones of another project are read-only."""
    check_visible(name, project, public)
    if not can_change(project):
        raise PermissionDenied(
            f"model {name!r} belongs to another project and is read-only to yours",
            code="read_only_model",
        )


def require_admin(caller: Principal | None) -> Principal:
    """The caller if it holds the `admin` scope: MissingCaller without one, PermissionDenied
    for any other key. Projects and keys are managed by admins only."""
    who = require_caller(caller)
    require(who, Scope.ADMIN)
    return who
