"""Where a model's files come from: a directory, ONNX + tokenizer, a spaCy package, an
installed Python package, or the Hugging Face Hub. Each yields a file plan; nothing is loaded.

Example::

    plan = plan_spacy("en_core_web_sm")
    plan.files  # {"meta.json": Path(...), "ner/model": Path(...), ...}
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from openmaas.errors import InvalidRequest, NotFound, PayloadTooLarge, UnsupportedSource
from openmaas.protocol.registry import SKIPPED_NAMES
from openmaas.registry.hub import HUB_PATTERNS, check_hub_size, downloaded_bytes, hub_files
from openmaas.registry.intake import safe_member_path, walk_directory

# Sources read from the server's own disk: a tenant must not be able to register (and so
# read) arbitrary server directories.
SERVER_PATH_SOURCES = ("path", "onnx")

# Files that belong with an ONNX graph: tokenizer and model configs, never other weights.
TOKENIZER_SUFFIXES = frozenset({".json", ".txt", ".model", ".vocab", ".merges", ".tiktoken"})
_MODEL_MARKERS = ("config.json", "meta.json", "model.bin", "openmaas.json")
# Sources that read an installed package: a non-admin key may name only allowed ones.
INSTALLED_PACKAGE_SOURCES = ("spacy", "package")
# A distribution name (PEP 508) and an importable top-level package name. Checked with
# fullmatch; a spaCy package is never dotted: `find_spec("a.b")` imports (runs) package `a`.
_DISTRIBUTION_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")
_TOP_LEVEL_PACKAGE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True, slots=True)
class FilePlan:
    """Files to register ({relative path: readable file}) and a lineage note on their origin."""

    files: dict[str, Path]
    source: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None  # the directory the files live in, when they share one


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where the files of a version come from, as a registration request names them.

    Example::

        SourceRef(type="spacy", package="en_core_web_sm")
        SourceRef(type="onnx", path="/models/m.onnx", tokenizer_path="/models/tok")
    """

    type: Literal["path", "onnx", "spacy", "package", "hub"]
    path: str | None = None
    tokenizer_path: str | None = None
    package: str | None = None
    distribution: str | None = None
    subpath: str | None = None
    repo_id: str | None = None
    revision: str | None = None


def plan_source(
    source: SourceRef, hub_cache: Path, *, max_hub_bytes: int | None = None
) -> FilePlan:
    """The plan for a source as a registration request names it (Hub downloads go to
    `hub_cache`, at most `max_hub_bytes` of them)."""
    if source.type == "path":
        return plan_directory(Path(_given(source.path, "path")))
    if source.type == "onnx":
        tokenizer = Path(source.tokenizer_path) if source.tokenizer_path else None
        return plan_onnx(Path(_given(source.path, "path")), tokenizer)
    if source.type == "spacy":
        return plan_spacy(_given(source.package, "package"))
    if source.type == "package":
        return plan_package(_given(source.distribution, "distribution"), source.subpath)
    return plan_hub(
        _given(source.repo_id, "repo_id"), source.revision, hub_cache, max_bytes=max_hub_bytes
    )


def normalized_package_name(name: str) -> str:
    """A package's name as PEP 503 compares them: `vaderSentiment`, `en_core_web_sm` and
    `en-core-web-sm` are `vadersentiment`, `en-core-web-sm`, `en-core-web-sm`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_package_named(source: SourceRef) -> str | None:
    """The installed package a source reads (spaCy package or distribution), if any."""
    if source.type == "spacy":
        return source.package
    if source.type == "package":
        return source.distribution
    return None


def package_allowed(name: str, allowed: Collection[str]) -> bool:
    """Is `name` one of `allowed` (names already normalized)?"""
    return normalized_package_name(name) in allowed


def _given(value: str | None, name: str) -> str:
    # Empty is refused too: `importlib.metadata.distribution("")` raises ValueError (a 500).
    if not value:
        raise InvalidRequest(f"the source needs a non-empty {name!r}", param=f"source.{name}")
    return value


def plan_directory(path: Path) -> FilePlan:
    path = path.expanduser()
    if not path.exists():
        raise NotFound(f"no such file or directory on the server: {path}", param="path")
    if path.is_file():
        if path.suffix == ".onnx":
            return FilePlan(files={"model.onnx": path}, source={"type": "onnx", "file": path.name})
        if path.suffix == ".keras":
            return FilePlan(files={path.name: path}, source={"type": "keras", "file": path.name})
        raise UnsupportedSource(
            f"{path.name} is a file: register a model directory, an .onnx or .keras file, or "
            "upload a "
            ".tar.gz archive",
            param="path",
        )
    files = walk_directory(path)
    if not files:
        raise UnsupportedSource(f"directory {path} holds no files", param="path")
    return FilePlan(files=files, source={"type": "path", "name": path.name}, root=path.resolve())


def plan_onnx(onnx_path: Path, tokenizer_dir: Path | None) -> FilePlan:
    onnx_path = onnx_path.expanduser()
    if not onnx_path.is_file() or onnx_path.suffix != ".onnx":
        raise NotFound(f"no .onnx file at {onnx_path}", param="path")
    files: dict[str, Path] = {"model.onnx": onnx_path}
    source: dict[str, Any] = {"type": "onnx", "file": onnx_path.name}
    if tokenizer_dir is not None:
        tokenizer_dir = tokenizer_dir.expanduser()
        if not tokenizer_dir.is_dir():
            raise NotFound(f"no tokenizer directory at {tokenizer_dir}", param="tokenizer_path")
        for rel, path in walk_directory(tokenizer_dir).items():
            if PurePosixPath(rel).suffix in TOKENIZER_SUFFIXES and rel not in files:
                files[rel] = path
        source["tokenizer"] = tokenizer_dir.name
    return FilePlan(files=files, source=source)


def package_dir(import_name: str) -> Path:
    """The directory of an installed top-level package, found without importing anything."""
    if not _TOP_LEVEL_PACKAGE_RE.fullmatch(import_name):
        raise InvalidRequest(
            f"invalid package name {import_name!r}: name an installed top-level package "
            "(letters, digits, '_' or '-'; no dots)",
            param="package",
        )
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):  # ValueError: a loaded module without a spec
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(
            f"Python package {import_name!r} is not installed on the server", param="package"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def plan_spacy(package: str) -> FilePlan:
    import_name = package.replace("-", "_")
    root = package_dir(import_name)
    candidates = sorted(
        p.parent for p in root.rglob("meta.json") if (p.parent / "config.cfg").is_file()
    )
    if not candidates:
        raise UnsupportedSource(
            f"package {package!r} does not contain a spaCy pipeline (meta.json + config.cfg)",
            param="package",
        )
    pipeline = candidates[0]
    return FilePlan(
        files=walk_directory(pipeline),
        source={"type": "spacy", "package": import_name, "version": _version_of(import_name)},
        root=pipeline,
    )


def plan_package(distribution: str, subpath: str | None = None) -> FilePlan:
    """The model directory shipped inside an installed distribution (found by its markers).

    Only files the distribution itself installed (its RECORD) are taken: a subpath cannot
    reach a directory of another distribution, or anything else under site-packages.
    """
    if not _DISTRIBUTION_RE.fullmatch(distribution):
        raise InvalidRequest(
            f"invalid distribution name {distribution!r}: letters, digits, '.', '_' or '-'",
            param="distribution",
        )
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise NotFound(
            f"distribution {distribution!r} is not installed on the server", param="distribution"
        ) from None
    source = {"type": "package", "distribution": dist.metadata["Name"], "version": dist.version}
    if subpath:
        rel = safe_member_path(subpath)
        # Checked before anything is read: the subpath must be a directory of this
        # distribution's own files (no walk of site-packages, no server path in an answer).
        if not any(str(entry).startswith(rel + "/") for entry in dist.files or []):
            raise UnsupportedSource(
                f"distribution {dist.metadata['Name']!r} installed no files under {rel!r}; "
                "choose a directory it ships",
                param="subpath",
            )
        base = Path(str(dist.locate_file(rel)))
        source["subpath"] = rel
        return _own_files(dist, plan_directory(base), source)
    candidates: set[str] = set()
    for entry in dist.files or []:
        parts = PurePosixPath(str(entry)).parts
        if any(part.endswith(".dist-info") or part in SKIPPED_NAMES for part in parts):
            continue
        if parts[-1] in _MODEL_MARKERS or parts[-1].endswith(".onnx"):
            candidates.add(str(PurePosixPath(*parts[:-1])))
    if not candidates:
        raise UnsupportedSource(
            f"distribution {distribution!r} ships no model directory (looked for "
            f"{', '.join(_MODEL_MARKERS)} or .onnx files)",
            param="distribution",
        )
    shallowest = min(len(PurePosixPath(c).parts) for c in candidates)
    top = sorted(c for c in candidates if len(PurePosixPath(c).parts) == shallowest)
    top = [c for c in top if not any(c != o and c.startswith(o + "/") for o in candidates)]
    if len(top) != 1:
        raise UnsupportedSource(
            f"distribution {distribution!r} ships several model directories: "
            f"{', '.join(sorted(candidates))}; choose one with subpath",
            param="subpath",
        )
    source["subpath"] = top[0]
    return _own_files(dist, plan_directory(Path(str(dist.locate_file(top[0])))), source)


def _own_files(
    dist: importlib.metadata.Distribution, plan: FilePlan, source: dict[str, Any]
) -> FilePlan:
    """The plan's files that `dist` recorded as its own; refuses a plan with none."""
    recorded = {Path(str(dist.locate_file(entry))).resolve() for entry in dist.files or []}
    files = {rel: path for rel, path in plan.files.items() if path.resolve() in recorded}
    if not files:
        raise UnsupportedSource(
            f"distribution {source['distribution']!r} installed no files under "
            f"{source['subpath']!r}; choose a directory it ships",
            param="subpath",
        )
    return FilePlan(files=files, source=source, root=plan.root)


def plan_hub(
    repo_id: str, revision: str | None, cache_dir: Path, *, max_bytes: int | None = None
) -> FilePlan:
    """Download a snapshot from the Hugging Face Hub (needs network), safe formats only, at
    most `max_bytes` of them (measured from the Hub's metadata before, and again after)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UnsupportedSource(
            "Hub sources need the huggingface_hub package on the server (pip install "
            "'openmaas[models]')",
            param="repo_id",
        ) from None
    try:
        files = hub_files(repo_id, revision) if max_bytes is not None else None
    except Exception as exc:  # hub client raises many unrelated types for network failures
        raise _hub_unreachable(repo_id, exc) from exc
    if files is not None and max_bytes is not None:
        check_hub_size(repo_id, files.sizes, max_bytes=max_bytes)
    try:
        local = snapshot_download(
            repo_id,
            # The commit whose sizes were checked: a push meanwhile changes nothing here.
            revision=files.commit if files is not None and files.commit else revision,
            cache_dir=str(cache_dir),
            allow_patterns=list(HUB_PATTERNS),
        )
    except Exception as exc:
        raise _hub_unreachable(repo_id, exc) from exc
    if max_bytes is not None and downloaded_bytes(Path(local)) > max_bytes:
        raise PayloadTooLarge(
            f"{repo_id!r} downloaded past the limit of {max_bytes // (1024 * 1024)} MiB "
            "(OPENMAAS_MAX_HUB_DOWNLOAD_MB)",
            param="repo_id",
        )
    source = {"type": "hub", "repo_id": repo_id, "revision": revision or "main"}
    return _with_source(plan_directory(Path(local)), source)


def _hub_unreachable(repo_id: str, exc: Exception) -> UnsupportedSource:
    return UnsupportedSource(
        f"could not download {repo_id!r} from the Hugging Face Hub: "
        f"{exc.__class__.__name__}: {exc}"[:500],
        param="repo_id",
    )


def _with_source(plan: FilePlan, source: dict[str, Any]) -> FilePlan:
    return FilePlan(files=plan.files, source=source, root=plan.root)


def _version_of(import_name: str) -> str | None:
    try:
        return importlib.metadata.version(import_name)
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.metadata.version(import_name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            return None
