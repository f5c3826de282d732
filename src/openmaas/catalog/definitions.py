"""The catalog data file and where each entry's files are on this machine.

`load_catalog()` parses `catalog.toml` into frozen definitions; `locate()` says whether an
entry's packages are installed and complete. Availability only reads package metadata and
stats files: it never imports torch, spaCy or scikit-learn, so it stays fast. A Debian source
(a system package such as Apertium) is available when its command is on PATH and its files
exist.

Example::

    definitions = load_catalog()
    located = locate(definitions[0])
    located.available, located.reason  # -> (True, None)
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from openmaas.errors import InvalidName, UnsafeArtifact
from openmaas.registry.intake import safe_member_path
from openmaas.registry.names import check_model_name
from openmaas.tasks.names import Task

CATALOG_FILE = Path(__file__).with_name("catalog.toml")
KINDS = frozenset({"directory", "onnx", "rules", "linear-head"})
SOURCE_TYPES = frozenset({"pypi", "debian", "hub"})
INSTALLED_TYPES = frozenset({"pypi", "debian"})  # sources whose files are on this machine
DPKG_STATUS = Path("/var/lib/dpkg/status")
ROLES = frozenset({"model", "tokenizer", "encoder", "engine"})


class CatalogFileError(ValueError):
    """The catalog data file is malformed (a packaging bug, not a user error)."""


@dataclass(frozen=True, slots=True)
class CatalogSource:
    """One place an entry's files come from: an installed distribution, a Debian package or a
    Hub repository."""

    type: str  # pypi | debian | hub
    distribution: str | None = None
    package: str | None = None  # import name, when it differs; debian: the package name
    path: str | None = None  # directory inside the distribution ("{version}" allowed); debian:
    # an absolute system directory
    files: tuple[str, ...] = ()  # must exist under `path`
    copy: tuple[str, ...] = ()  # rules entries: copied next to the spec
    role: str = "model"
    repo_id: str | None = None
    command: str | None = None  # debian: the executable that must be on PATH
    installed_version: str | None = None  # filled in by `locate`


@dataclass(frozen=True, slots=True)
class CatalogDefinition:
    """A catalog entry as written in the data file."""

    name: str
    task: str
    runtime: str
    kind: str
    description: str
    license: str | None
    sources: tuple[CatalogSource, ...]
    params: dict[str, Any] = field(default_factory=dict)
    engine: str | None = None

    @property
    def packages(self) -> tuple[CatalogSource, ...]:
        return tuple(s for s in self.sources if s.type in INSTALLED_TYPES)

    def package(self, role: str) -> CatalogSource:
        for source in self.packages:
            if source.role == role:
                return source
        raise CatalogFileError(f"catalog entry {self.name!r} has no package with role {role!r}")


@dataclass(frozen=True, slots=True)
class LocatedPackage:
    """An installed package source: its version and the directory its files are in."""

    source: CatalogSource
    version: str
    root: Path

    def lineage(self) -> dict[str, Any]:
        if self.source.type == "debian":
            return {
                "type": "debian",
                "package": self.source.package,
                "version": self.version,
                "path": self.source.path,
                "role": self.source.role,
            }
        return {
            "distribution": self.source.distribution,
            "version": self.version,
            "path": self.source.path,
            "role": self.source.role,
        }


@dataclass(frozen=True, slots=True)
class Located:
    """Where an entry's packages are, or why it cannot be registered here."""

    definition: CatalogDefinition
    packages: tuple[LocatedPackage, ...]
    reason: str | None  # None when every package is installed and complete

    @property
    def available(self) -> bool:
        return self.reason is None

    def package(self, role: str) -> LocatedPackage:
        for located in self.packages:
            if located.source.role == role:
                return located
        raise CatalogFileError(
            f"catalog entry {self.definition.name!r} has no package with role {role!r}"
        )


# -- parsing -------------------------------------------------------------------------------


def load_catalog(path: Path = CATALOG_FILE) -> tuple[CatalogDefinition, ...]:
    """Parse and check the catalog data file; raises CatalogFileError naming the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogFileError(f"cannot read the catalog file {path.name}: {exc}") from exc
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise CatalogFileError(f"{path.name} lists no [[models]]")
    definitions = tuple(_definition(raw) for raw in models)
    names = [d.name for d in definitions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CatalogFileError(f"{path.name} lists {', '.join(duplicates)} more than once")
    return definitions


def _definition(raw: Mapping[str, Any]) -> CatalogDefinition:
    name = _text(raw, "name", "?")
    where = f"catalog entry {name!r}"
    try:
        check_model_name(name)
    except InvalidName as exc:
        raise CatalogFileError(f"{where}: {exc}") from exc
    task = _text(raw, "task", where)
    if task not in {t.value for t in Task}:
        raise CatalogFileError(f"{where}: unknown task {task!r}")
    kind = _text(raw, "kind", where)
    if kind not in KINDS:
        raise CatalogFileError(f"{where}: kind must be one of {sorted(KINDS)}, got {kind!r}")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise CatalogFileError(f"{where}: params must be a table")
    sources = tuple(_source(s, where) for s in raw.get("sources") or [])
    definition = CatalogDefinition(
        name=name,
        task=task,
        runtime=_text(raw, "runtime", where),
        kind=kind,
        description=_text(raw, "description", where),
        license=_optional_text(raw, "license", where),
        sources=sources,
        params=dict(params),
        engine=_optional_text(raw, "engine", where),
    )
    _check_kind(definition, where)
    return definition


def _source(raw: Any, where: str) -> CatalogSource:
    if not isinstance(raw, dict):
        raise CatalogFileError(f"{where}: every source must be a table")
    kind = _text(raw, "type", where)
    if kind not in SOURCE_TYPES:
        raise CatalogFileError(f"{where}: source type must be pypi, debian or hub, got {kind!r}")
    if kind == "hub":
        return CatalogSource(type="hub", repo_id=_text(raw, "repo_id", where))
    if kind == "debian":
        return _debian_source(raw, where)
    path = _safe_path(_text(raw, "path", where), "path", where)
    files = _paths(raw, "files", where)
    copy = _paths(raw, "copy", where)
    if not set(copy) <= set(files):
        raise CatalogFileError(f"{where}: every `copy` file must also be listed in `files`")
    return CatalogSource(
        type="pypi",
        distribution=_text(raw, "distribution", where),
        package=_optional_text(raw, "package", where),
        path=path,
        files=files,
        copy=copy,
        role=_role(raw, where),
    )


def _debian_source(raw: Mapping[str, Any], where: str) -> CatalogSource:
    # The files stay where dpkg put them (nothing is copied), so `path` is a system directory.
    path = PurePosixPath(_text(raw, "path", where))
    if not path.is_absolute() or ".." in path.parts:
        raise CatalogFileError(f"{where}: a debian source's `path` must be an absolute directory")
    return CatalogSource(
        type="debian",
        package=_text(raw, "package", where),
        command=_text(raw, "command", where),
        path=str(path),
        files=_paths(raw, "files", where),
        role=_role(raw, where),
    )


def _role(raw: Mapping[str, Any], where: str) -> str:
    role = raw.get("role", "model")
    if role not in ROLES:
        raise CatalogFileError(f"{where}: role must be one of {sorted(ROLES)}, got {role!r}")
    return str(role)


def _check_kind(definition: CatalogDefinition, where: str) -> None:
    roles = [s.role for s in definition.packages]
    if len(set(roles)) != len(roles):
        raise CatalogFileError(f"{where}: two packages share a role")
    needed = {
        "directory": {"model"},
        "onnx": {"model", "tokenizer"},
        "rules": {"engine"},
        "linear-head": {"model", "encoder"},
    }[definition.kind]
    if not needed <= set(roles):
        raise CatalogFileError(f"{where}: kind {definition.kind} needs packages {sorted(needed)}")
    if (definition.kind == "rules") != (definition.engine is not None):
        raise CatalogFileError(f"{where}: `engine` is required for rules entries, and only there")


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CatalogFileError(f"{where}: `{key}` must be a non-empty string")
    return value


def _optional_text(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    return _text(raw, key, where) if key in raw else None


def _paths(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = raw.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CatalogFileError(f"{where}: `{key}` must be a list of relative paths")
    return tuple(_safe_path(v, key, where) for v in values)


def _safe_path(value: str, key: str, where: str) -> str:
    try:
        return safe_member_path(value)
    except UnsafeArtifact as exc:  # an absolute or escaping path in our own data file
        raise CatalogFileError(f"{where}: `{key}`: {exc}") from exc


# -- availability --------------------------------------------------------------------------


def locate(definition: CatalogDefinition) -> Located:
    """Find every package the entry needs; the first missing piece becomes the reason."""
    found: list[LocatedPackage] = []
    for source in definition.packages:
        located = _locate_package(source)
        if isinstance(located, str):
            return Located(definition=definition, packages=tuple(found), reason=located)
        found.append(located)
    return Located(definition=definition, packages=tuple(found), reason=None)


def _locate_package(source: CatalogSource) -> LocatedPackage | str:
    try:
        if source.type == "debian":
            return _find_debian_package(source)
        return _find_package(source)
    except OSError as exc:  # an unreadable RECORD or directory: unavailable, not a crash
        return f"cannot read package {source.distribution or source.package!r}: {exc}"


def _find_package(source: CatalogSource) -> LocatedPackage | str:
    # Both are checked when the catalog file is loaded.
    assert source.distribution is not None
    assert source.path is not None
    try:
        dist = importlib.metadata.distribution(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        return (
            f"Python package {source.distribution!r} is not installed on the server "
            f"(pip install {source.distribution})"
        )
    version = dist.version
    rel = source.path.format(version=version)
    root = Path(str(dist.locate_file(rel)))
    if not root.is_dir():
        return f"{source.distribution} {version} has no directory {rel!r}"
    for name in source.files:
        if not (root / name).is_file():
            return f"{source.distribution} {version} is incomplete: {rel}/{name} is missing"
    # Everything the package's RECORD lists under the directory must still be there: a
    # half-removed install would otherwise register a model that cannot load.
    prefix = PurePosixPath(rel).parts
    for entry in dist.files or ():
        parts = PurePosixPath(str(entry)).parts
        if parts[: len(prefix)] != prefix or "__pycache__" in parts:
            continue
        if not Path(str(dist.locate_file(entry))).is_file():
            return f"{source.distribution} {version} is incomplete: {entry} is missing"
    return LocatedPackage(source=source, version=version, root=root)


def _find_debian_package(source: CatalogSource) -> LocatedPackage | str:
    # All three are checked when the catalog file is loaded.
    assert source.package is not None
    assert source.command is not None
    assert source.path is not None
    install = f"apt-get install {source.package}"
    if shutil.which(source.command) is None:
        return f"the {source.command!r} command is not installed on the server ({install})"
    root = Path(source.path)
    for name in source.files:
        if not (root / name).is_file():
            return f"Debian package {source.package!r} is missing {root / name} ({install})"
    return LocatedPackage(source=source, version=_debian_version(source.package), root=root)


def _debian_version(package: str) -> str:
    """The version dpkg recorded; "unknown" where there is no dpkg database (the files were
    found, so the model works whoever installed them)."""
    try:
        status = DPKG_STATUS.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    # `.+\n` never matches an empty line, so the search stays inside the package's stanza.
    pattern = rf"^Package: {re.escape(package)}\n(?:.+\n)*?Version: (\S+)$"
    found = re.search(pattern, status, flags=re.MULTILINE)
    return found.group(1) if found else "unknown"
