"""Who may see and change which model, decided from an explicit caller.

Services take the caller as an argument (`caller: Principal`) and start with
`require_caller`; nothing here reads ambient state, so code that lost its caller (a thread,
a generator, another process) is refused rather than treated as the server. The server's
own work passes `auth.entities.SYSTEM`. A model the caller may not see is reported exactly
like a model that does not exist.

Example::

    who = require_caller(caller)  # MissingCaller (403) for None
    check_visible(version.model, version.project, version.public, who)  # or ModelNotFound
"""

from __future__ import annotations

from openmaas.auth.entities import Principal
from openmaas.auth.scopes import Scope, require
from openmaas.errors import MissingCaller, ModelNotFound, PermissionDenied


def require_caller(caller: Principal | None) -> Principal:
    """The caller, or MissingCaller: every service entry point that reads or changes tenant
    data starts with this, so a lost caller is refused instead of seeing everything."""
    if not isinstance(caller, Principal):
        raise MissingCaller("this operation needs an explicit caller", param="caller")
    return caller


def require_admin(caller: Principal | None) -> Principal:
    """The caller if it holds the `admin` scope: MissingCaller without one, PermissionDenied
    for any other key. Projects and keys are managed by admins only."""
    who = require_caller(caller)
    require(who, Scope.ADMIN)
    return who


def is_admin(caller: Principal) -> bool:
    # isinstance, not truthiness: a None that slipped past the type checker is no admin.
    return isinstance(caller, Principal) and Scope.ADMIN in caller.scopes


def can_see(project: str, public: bool, caller: Principal) -> bool:
    """Its own project's models, every public one, and everything for an admin."""
    if not isinstance(caller, Principal):
        return False
    return is_admin(caller) or public or caller.project == project


def can_change(project: str, public: bool, caller: Principal) -> bool:
    """Admins change any model; a tenant only its own project's private ones.

    A public model (the built-in catalog, or one an admin published) is served to every
    project, so a change to it (a new version, an alias move, an edit, a delete) would reach
    every tenant: it belongs to no tenant, whatever project registered it, and only an admin
    key changes it.
    """
    if not isinstance(caller, Principal):
        return False
    return is_admin(caller) or (not public and caller.project == project)


def check_visible(name: str, project: str, public: bool, caller: Principal) -> None:
    if not can_see(project, public, caller):
        raise ModelNotFound(f"model {name!r} not found", param="model")


def check_changeable(name: str, project: str, public: bool, caller: Principal) -> None:
    """Hidden models are 'not found'; visible ones the caller may not change are read-only."""
    check_visible(name, project, public, caller)
    if can_change(project, public, caller):
        return
    if public:
        raise PermissionDenied(
            f"model {name!r} is public (served to every project): only an admin key changes it",
            code="read_only_model",
        )
    raise PermissionDenied(
        f"model {name!r} belongs to another project and is read-only to yours",
        code="read_only_model",
    )
