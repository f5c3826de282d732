"""The registry sits below serving and the API: it imports neither, nor FastAPI, and each
of its modules stays small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import openmaas.registry

REGISTRY = Path(openmaas.registry.__file__).parent
MODULES = sorted(REGISTRY.glob("*.py"))
FORBIDDEN = ("openmaas.serving", "openmaas.api", "openmaas.wiring", "fastapi", "starlette")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_registry_modules_import_no_serving_or_api(path: Path) -> None:
    bad = sorted(m for m in _imports(path) if m.startswith(FORBIDDEN))
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_registry_modules_stay_under_600_lines(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 600
