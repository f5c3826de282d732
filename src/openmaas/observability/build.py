"""What this server is built from, for the `openmaas_build_info` gauge: its version (from the
package metadata: `openmaas/__init__` would import the SDK into the server's layers), the
commit (the setting an image build passes, else the source checkout's), Python and torch.

Example::

    metrics.describe_build(build_labels(settings))
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from openmaas.settings import Settings

UNKNOWN = "unknown"
# src/openmaas/observability/build.py: the checkout's root is four levels up.
CHECKOUT = Path(__file__).resolve().parents[3]


def build_labels(settings: Settings) -> dict[str, str]:
    return {
        "version": package_version(),
        "git_sha": settings.git_sha or checkout_commit() or UNKNOWN,
        "python": platform.python_version(),
        "torch": _installed("torch"),
    }


def package_version() -> str:
    return _installed("openmaas")


@functools.cache  # once per process: every server built in it shares the checkout
def checkout_commit(root: Path = CHECKOUT) -> str | None:
    """The commit of the source checkout this package runs from; None for an installed
    package (no checkout of ours around it) or without git."""
    if not ((root / ".git").exists() and (root / "pyproject.toml").is_file()):
        return None
    try:
        found = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = found.stdout.strip()
    return commit if found.returncode == 0 and len(commit) == 40 else None


def _installed(distribution: str) -> str:
    """Its version from the package metadata: importing torch would cost seconds."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "none"
