"""The SDK and the wire schemas import nothing of the server.

Each check runs in a fresh interpreter, so what the test process has already imported does
not hide an import.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import openmaas.protocol

SERVER_LIBRARIES = {"fastapi", "starlette", "sqlalchemy", "alembic", "numpy", "torch", "limits"}


def imported_after(statement: str) -> tuple[list[str], list[str]]:
    """(openmaas modules, server libraries) loaded by running `statement` on its own."""
    script = (
        "import json, sys\n"
        f"{statement}\n"
        "ours = sorted(m for m in sys.modules if m == 'openmaas' or m.startswith('openmaas.'))\n"
        "tops = {m.split('.')[0] for m in sys.modules}\n"
        f"print(json.dumps([ours, sorted(tops & set({sorted(SERVER_LIBRARIES)!r}))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    ours, libraries = json.loads(out.stdout)
    return ours, libraries


def outside(modules: list[str], *packages: str) -> list[str]:
    return [
        m
        for m in modules
        if m != "openmaas" and not any(m == p or m.startswith(f"{p}.") for p in packages)
    ]


def test_the_sdk_imports_only_itself_and_the_wire_schemas() -> None:
    ours, libraries = imported_after(
        "import openmaas.client\nfrom openmaas import APIError, Client\nClient, APIError"
    )
    assert "openmaas.client.client" in ours
    assert outside(ours, "openmaas.client", "openmaas.protocol") == []
    assert libraries == []


def test_the_wire_schemas_import_nothing_of_the_server() -> None:
    names = [
        f"openmaas.protocol.{m.name}" for m in pkgutil.iter_modules(openmaas.protocol.__path__)
    ]
    assert {"openmaas.protocol.registry", "openmaas.protocol.v2"} <= set(names)
    ours, libraries = imported_after("\n".join(f"import {name}" for name in names))
    assert outside(ours, "openmaas.protocol") == []
    assert libraries == []
