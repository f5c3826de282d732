"""The layering of docs/architecture.md holds: every import contract in pyproject.toml
(`[tool.importlinter]`) is kept, indirect imports included. `make lint` runs the same check
as `lint-imports`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a subprocess: import-linter configures logging for its own run (disabling every logger
# that exists), which would silence the rest of the suite's log assertions.
LINT = "from importlinter.cli import lint_imports; raise SystemExit(lint_imports(no_cache=True))"


def test_every_import_contract_is_kept() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


def test_the_ray_contract_names_every_package_but_scaleout() -> None:
    """A forbidden contract checks only the packages it lists: a new package must join it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (ray,) = [c for c in contracts if c["forbidden_modules"] == ["ray"]]
    package = ROOT / "src" / "openmaas"
    every = {
        f"openmaas.{path.stem}"
        for path in package.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert set(ray["source_modules"]) == every - {"openmaas.scaleout"}
