"""The app's routes as the middleware sees them: matched once per request, before the app.

Middleware that must decide before a body is read (authentication, body limits) needs the
route a request will reach: its path template and what it asks of the caller. The table is
built from the routers the app includes, in the app's order, with the guards each inclusion
adds; a request is matched at most once and the result kept in its scope.

Example::

    table = RouteTable([(embeddings.router, requires(Scope.INFERENCE)), (health.router, None)])
    entry = table.match(scope)  # None: no route; the app answers 404 or 405
    entry.path, entry.needs.key, entry.needs.guards
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from openmaas.api.deps import ScopeGuard, principal

_MATCHED = "openmaas.route_entry"  # where a request's match is kept in its scope


@dataclass(frozen=True, slots=True)
class RouteNeeds:
    """What a route asks of its caller before it runs."""

    key: bool  # an authenticated principal (`deps.principal` among its dependencies)
    guards: tuple[ScopeGuard, ...]  # scope checks (`deps.requires`): each must pass


@dataclass(frozen=True, slots=True)
class RouteEntry:
    route: APIRoute
    needs: RouteNeeds

    @property
    def path(self) -> str:
        return self.route.path  # the template: /v1/registry/models/{name}/versions/upload


def route_needs(route: APIRoute, extra: Iterable[object] = ()) -> RouteNeeds:
    calls = [*extra, *_calls(route.dependant)]
    guards = tuple(call for call in calls if isinstance(call, ScopeGuard))
    return RouteNeeds(key=bool(guards) or principal in calls, guards=guards)


def _calls(dependant: Dependant) -> Iterator[object]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


class RouteTable:
    def __init__(self, included: Iterable[tuple[APIRouter, ScopeGuard | None]]) -> None:
        self.entries = tuple(
            RouteEntry(route, route_needs(route, [guard] if guard else []))
            for router, guard in included
            for route in router.routes
            if isinstance(route, APIRoute)
        )

    def match(self, scope: Scope) -> RouteEntry | None:
        """The entry whose route fully matches this request (path and method), or None."""
        if _MATCHED in scope:
            found: RouteEntry | None = scope[_MATCHED]
            return found
        found = None
        for entry in self.entries:
            match, _ = entry.route.matches(scope)
            if match is Match.FULL:
                found = entry
                break
        scope[_MATCHED] = found
        return found

    def template(self, scope: Scope) -> str | None:
        entry = self.match(scope)
        return entry.path if entry is not None else None
