"""Hugging Face Hub downloads, bounded: what a registration may fetch, decided before fetching.

A Hub source names any public repository, so its size is the repository owner's choice. The
files a registration would download (the safe formats, `HUB_PATTERNS`) are listed with their
sizes from the Hub's metadata first and refused past `max_bytes` (413), and the snapshot is
then fetched at that exact commit, so what is downloaded is what was measured; what arrived
is measured again. Downloads go to a directory of their own that the registration removes
once the files are copied into the artifact store (no shared cache grows on the server).

Example::

    files = hub_files("sentence-transformers/all-MiniLM-L6-v2", None)
    check_hub_size("sentence-transformers/all-MiniLM-L6-v2", files.sizes, max_bytes=8 << 30)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from openmaas.errors import PayloadTooLarge

# The files a registration takes from a repository: safe formats only.
HUB_PATTERNS = (
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.onnx",
    "*.md",
    "*/*.json",
    "*/*.safetensors",
    "*/*.txt",
    "*/*.onnx",
)


@dataclass(frozen=True, slots=True)
class HubFiles:
    """The files of one commit of a repository that a registration would download."""

    commit: str | None  # the commit the sizes were read at; downloads pin it
    sizes: Mapping[str, int | None]  # repository path -> bytes (None: the Hub did not say)


def wanted(paths: Iterable[str]) -> list[str]:
    """The repository paths a registration downloads: `fnmatch` against `HUB_PATTERNS`, as
    the Hub client matches `allow_patterns` (`*` crosses `/`)."""
    return [path for path in paths if any(fnmatch(path, p) for p in HUB_PATTERNS)]


def hub_files(repo_id: str, revision: str | None) -> HubFiles:
    """The sizes of the files a registration of `repo_id` would download (needs network)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
    return HubFiles(commit=info.sha, sizes={path: sizes[path] for path in wanted(sizes)})


def check_hub_size(repo_id: str, sizes: Mapping[str, int | None], *, max_bytes: int) -> None:
    """Refuse (413) a download past `max_bytes`, or one whose sizes the Hub did not report
    (it cannot be bounded before it is fetched)."""
    unknown = sorted(path for path, size in sizes.items() if size is None)
    if unknown:
        raise PayloadTooLarge(
            f"the Hugging Face Hub reports no size for {unknown[0]!r} in {repo_id!r}, so the "
            "download cannot be bounded; upload the model instead",
            param="repo_id",
        )
    total = sum(size or 0 for size in sizes.values())
    if total > max_bytes:
        raise PayloadTooLarge(
            f"{repo_id!r} holds {_mib(total)} in the files a registration downloads, over the "
            f"limit of {_mib(max_bytes)} (OPENMAAS_MAX_HUB_DOWNLOAD_MB)",
            param="repo_id",
        )


def downloaded_bytes(root: Path) -> int:
    """Bytes under `root`, links followed once (a Hub snapshot links into its blobs)."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                total += path.stat().st_size
    return total


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
