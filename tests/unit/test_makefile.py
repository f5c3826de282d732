"""`make serve` binds where the README says: `HOST=…` and `PORT=…` on make's command line, else
OPENMAAS_HOST and OPENMAAS_PORT (it always passed `--port 8000`, so OPENMAAS_PORT did nothing).
`make -n` prints the commands without running any of them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def serve_command(*arguments: str, **env: str) -> str:
    """The `openmaas serve` line `make serve` would run."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if name not in ("HOST", "PORT", "MAKEFLAGS") and not name.startswith("OPENMAAS_")
    }
    made = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "serve", *arguments],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = [line for line in made.stdout.splitlines() if "openmaas serve" in line]
    return line.strip()


def test_make_serve_leaves_the_address_to_the_settings() -> None:
    assert serve_command().endswith("/openmaas serve")
    assert serve_command(OPENMAAS_PORT="9001").endswith("/openmaas serve")


def test_make_serve_passes_host_and_port_when_given() -> None:
    assert serve_command("PORT=9001").endswith("/openmaas serve --port 9001")
    both = serve_command("HOST=0.0.0.0", "PORT=9001")
    assert both.endswith("/openmaas serve --host 0.0.0.0 --port 9001")


def installed_checkout(root: Path, dpkg_exit: int) -> dict[str, str]:
    """A checkout whose virtualenv is installed, with a stub `openmaas` that prints its
    arguments and a `dpkg` that finds every package (exit 0) or none (1): the environment
    `make serve` runs in there."""
    shutil.copy(ROOT / "Makefile", root)
    shutil.copy(ROOT / "pyproject.toml", root)
    bin_dir, tools = root / ".venv" / "bin", root / "tools"
    bin_dir.mkdir(parents=True)
    tools.mkdir()
    for stub, body in (
        (bin_dir / "openmaas", 'echo "ran openmaas $*"'),
        (tools / "dpkg", f"exit {dpkg_exit}"),
    ):
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    (bin_dir / "python").symlink_to(bin_dir / "openmaas")
    (root / ".venv" / ".installed").touch()  # newer than pyproject.toml: nothing to install
    # The console's assets, built after the lockfile and script they come from.
    for name in ("console/package-lock.json", "console/build.mjs"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    asset = root / "src/openmaas/api/ui/static/vendor/chart.umd.js"
    asset.parent.mkdir(parents=True)
    asset.touch()
    return {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "HOME": str(root)}


@pytest.mark.parametrize("dpkg_exit", [0, 1], ids=["installed", "missing"])
def test_make_serve_names_the_missing_optional_packages(tmp_path: Path, dpkg_exit: int) -> None:
    env = installed_checkout(tmp_path, dpkg_exit)
    made = subprocess.run(
        ["make", "serve", "PORT=9001"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    notes = [line for line in made.stdout.splitlines() if line.startswith("optional:")]
    if dpkg_exit == 0:
        assert notes == []
    else:
        assert notes == [
            "optional: apt-get install apertium apertium-eng-spa for English <-> Spanish "
            "translation (catalog model apertium-eng-spa; installed after the first start: "
            "openmaas catalog register apertium-eng-spa)",
            "optional: apt-get install pocketsphinx-testdata for the audio clip of the "
            "README's speech examples",
            "optional: apt-get install espeak-ng for speech synthesis (catalog model "
            "espeak-ng; installed after the first start: openmaas catalog register espeak-ng)",
        ]
    assert made.stdout.splitlines()[-1] == "ran openmaas serve --port 9001"
