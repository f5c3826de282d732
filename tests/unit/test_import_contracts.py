"""The layering of docs/architecture.md holds: every import contract in pyproject.toml
(`[tool.importlinter]`) is kept, indirect imports included. `make lint` runs the same check
as `lint-imports`."""

from __future__ import annotations

import subprocess
import sys
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
