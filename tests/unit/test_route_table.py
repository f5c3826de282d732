"""The middleware's view of the app's routes: which need a key, and with which scopes."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute

from openmaas.api.app import build_app
from openmaas.api.authentication import AuthenticationMiddleware
from openmaas.api.route_table import RouteTable
from openmaas.auth.scopes import Scope
from openmaas.settings import Settings

PUBLIC = {"/livez", "/readyz", "/v2/health/live", "/v2/health/ready"}


def _table(tmp_path: Path) -> RouteTable:
    app = build_app(Settings(home=tmp_path, catalog_autoregister=False))
    for middleware in app.user_middleware:
        if middleware.cls is AuthenticationMiddleware:
            table: RouteTable = middleware.kwargs["routes"]
            return table
    raise AssertionError("no authentication middleware")


def test_every_route_but_the_probes_needs_a_key_before_its_body(tmp_path: Path) -> None:
    table = _table(tmp_path)
    open_routes = {entry.path for entry in table.entries if not entry.needs.key}
    assert open_routes <= PUBLIC, open_routes
    assert {"/livez", "/readyz"} <= open_routes


def test_scopes_come_from_the_guards(tmp_path: Path) -> None:
    table = _table(tmp_path)

    def request(path: str) -> dict[str, object]:
        return {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": []}

    scope = request("/v1/registry/models/m/versions/upload")
    entry = table.match(scope)
    assert entry is not None
    assert entry.path == "/v1/registry/models/{name}/versions/upload"
    assert [guard.needed("POST") for guard in entry.needs.guards] == [(Scope.MODELS_WRITE,)]
    assert table.match(scope) is entry  # matched once, kept in the scope
    assert table.match(request("/v1/nothing")) is None


def test_the_table_holds_every_route_the_app_serves(tmp_path: Path) -> None:
    app = build_app(Settings(home=tmp_path, catalog_autoregister=False))
    table = _table(tmp_path / "again")
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    schema = app.openapi()["paths"]
    documented = {(path, method.upper()) for path, item in schema.items() for method in item}
    in_table = {
        (path, method)
        for entry in table.entries
        for path in (entry.path, entry.route.path_format)
        for method in entry.route.methods
    }
    assert served | documented <= in_table | {
        (path, "GET") for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
    }
