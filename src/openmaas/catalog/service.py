"""The catalog service: which built-in models are available here, and their registration.

Registration is metadata only: nothing is loaded. Package directories are recorded in place
(hashed, not copied); small derived artifacts (an ONNX graph with its tokenizer, a rules
spec, converted classifier heads) are written to a temporary directory and copied into the
artifact store. The catalog acts as the server itself (`SYSTEM`): its models are public to
every project from the moment they are created, so no tenant key ever changes them (only an
admin does), and whether an entry's name is taken is a fact about the whole registry.

Example::

    catalog = CatalogService(registry)
    [e.name for e in catalog.entries() if e.available]  # -> ["all-minilm-l6-v2", ...]
    catalog.register_available()  # on first start; a second call registers nothing
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from openmaas.auth.entities import SYSTEM
from openmaas.catalog.definitions import (
    CatalogDefinition,
    CatalogSource,
    Located,
    load_catalog,
    locate,
)
from openmaas.errors import CatalogEntryNotFound, Conflict, ModelNotFound, UnsupportedSource
from openmaas.registry.composition import Registry
from openmaas.registry.entities import Lineage, ModelVersion, Storage
from openmaas.registry.names import DEFAULT_ALIAS
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import FilePlan, plan_directory, plan_onnx
from openmaas.runtimes.base import NATIVE_SPEC

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A catalog entry as this server sees it: can it be registered, and is it already."""

    name: str
    task: str
    runtime: str
    description: str
    license: str | None
    sources: tuple[CatalogSource, ...]
    available: bool
    unavailable_reason: str | None
    registered: bool  # a model of this name exists in the registry


class CatalogService:
    """The built-in catalog over a registry.

    Example::

        catalog = CatalogService(registry)
        versions = catalog.register_available(actor="catalog")
        catalog.get("vader").registered  # -> True
    """

    def __init__(
        self, registry: Registry, definitions: Sequence[CatalogDefinition] | None = None
    ) -> None:
        self.registry = registry
        self.definitions = tuple(definitions) if definitions is not None else load_catalog()

    # -- reading ------------------------------------------------------------------------

    def entries(self) -> list[CatalogEntry]:
        registered = {m.name for m in self.registry.list_models(caller=SYSTEM)}
        return [self._entry(locate(d), d.name in registered) for d in self.definitions]

    def get(self, name: str) -> CatalogEntry:
        definition = self._definition(name)
        return self._entry(locate(definition), self._exists(name))

    def _exists(self, name: str) -> bool:
        try:
            self.registry.get_model(name, caller=SYSTEM)
        except ModelNotFound:
            return False
        return True

    def _definition(self, name: str) -> CatalogDefinition:
        for definition in self.definitions:
            if definition.name == name:
                return definition
        known = ", ".join(d.name for d in self.definitions)
        raise CatalogEntryNotFound(f"no catalog entry {name!r} (catalog: {known})", param="name")

    @staticmethod
    def _entry(located: Located, registered: bool) -> CatalogEntry:
        definition = located.definition
        versions = {p.source: p.version for p in located.packages}
        sources = tuple(_with_version(s, versions.get(s)) for s in definition.sources)
        return CatalogEntry(
            name=definition.name,
            task=definition.task,
            runtime=definition.runtime,
            description=definition.description,
            license=definition.license,
            sources=sources,
            available=located.available,
            unavailable_reason=located.reason,
            registered=registered,
        )

    # -- registration -------------------------------------------------------------------

    def register_available(self, actor: str = "catalog") -> list[ModelVersion]:
        """Register every available entry whose name is not in the registry yet.

        One failing entry is logged and skipped; the others still register.
        """
        with self._lock():
            return self._register_missing(actor)

    def _lock(self) -> FileLock:
        # Several server workers start at once: the lock makes a check-then-register atomic
        # on this host, so each entry is registered once.
        lock = self.registry.artifacts.root / ".catalog.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock))

    def _register_missing(self, actor: str) -> list[ModelVersion]:
        existing = {m.name for m in self.registry.list_models(caller=SYSTEM)}
        versions: list[ModelVersion] = []
        for definition in self.definitions:
            if definition.name in existing:
                continue
            try:
                located = locate(definition)
                if not located.available:
                    log.debug("catalog: %s unavailable: %s", definition.name, located.reason)
                    continue
                versions.append(self._register(located, actor))
            except Exception as exc:  # any failure is per entry: the server must still start
                log.warning(
                    "catalog: could not register %s: %s: %s",
                    definition.name,
                    exc.__class__.__name__,
                    exc,
                    exc_info=True,
                )
                continue
            log.info("catalog: registered %s:%s", definition.name, versions[-1].version)
        return versions

    def register(self, name: str, actor: str = "catalog") -> ModelVersion:
        """Register one entry now: one whose package was installed after the first start.

        Refuses a name the catalog lacks (404, naming the entries), a name already registered
        (409) and an entry whose packages are still missing (400, naming what to install).
        """
        definition = self._definition(name)
        with self._lock():
            if self._exists(name):
                raise Conflict(
                    f"a model named {name!r} is already registered (openmaas models show {name})",
                    param="name",
                    code="catalog_entry_registered",
                )
            located = locate(definition)
            if not located.available:
                raise UnsupportedSource(
                    f"catalog entry {name!r} is not available here: {located.reason}",
                    param="name",
                    code="catalog_entry_unavailable",
                )
            version = self._register(located, actor)
        log.info("catalog: registered %s:%s", name, version.version)
        return version

    def _register(self, located: Located, actor: str) -> ModelVersion:
        definition = located.definition
        lineage_source: dict[str, Any] = {
            "type": "catalog",
            "entry": definition.name,
            "packages": [p.lineage() for p in located.packages],
        }
        primary = located.packages[0]
        lineage_source["distribution"] = primary.source.distribution or primary.source.package
        lineage_source["version"] = primary.version
        tags = {"origin": "catalog"}
        if definition.license:
            tags["license"] = definition.license
        with tempfile.TemporaryDirectory(prefix="openmaas-catalog-") as tmp:
            plan, storage, extra, transform = _plan(located, Path(tmp), lineage_source)
            spec = VersionSpec(
                task=definition.task,
                runtime=definition.runtime,
                description=definition.description,
                tags=tags,
                params={**definition.params, **extra},
                lineage=Lineage(source=lineage_source, transform=transform),
                alias=DEFAULT_ALIAS,
                created_by=actor,
                # The built-in catalog is for everyone: every project sees and calls its
                # models, and (being public from the start) only admins change them.
                public=True,
            )
            version = self.registry.registration.register_plan(
                definition.name, plan, spec, caller=SYSTEM, storage=storage
            )
        # The model (not only its first version) should say what it is in `models list`.
        self.registry.store.update_model(
            definition.name, description=definition.description, caller=SYSTEM, actor=actor
        )
        return version


def _plan(
    located: Located, tmp: Path, lineage_source: dict[str, Any]
) -> tuple[FilePlan, Storage, dict[str, Any], str | None]:
    """The files to register for an entry: (plan, storage, extra params, lineage transform).

    Package directories are recorded in place; anything assembled or converted here lives
    in `tmp` only until it is copied into the store.
    """
    kind = located.definition.kind
    if kind == "directory":
        plan = plan_directory(located.package("model").root)
        in_place = FilePlan(files=plan.files, source=lineage_source, root=plan.root)
        return in_place, Storage.EXTERNAL, {}, None
    if kind == "onnx":
        return _onnx_plan(located, lineage_source), Storage.STORE, {}, None
    work = tmp / located.definition.name
    extra: dict[str, Any] = {}
    transform = None
    if kind == "rules":
        _write_rules_spec(located, work)
        extra = _engine_params(located)
    else:
        extra = _write_linear_head(located, work)
        transform = "sklearn-joblib-to-safetensors"
    plan = plan_directory(work)
    return FilePlan(files=plan.files, source=lineage_source), Storage.STORE, extra, transform


def _with_version(source: CatalogSource, version: str | None) -> CatalogSource:
    if version is None:
        return source
    path = source.path.format(version=version) if source.path else None
    return replace(source, path=path, installed_version=version)


def _onnx_plan(located: Located, lineage_source: dict[str, Any]) -> FilePlan:
    model = located.package("model")
    tokenizer = located.package("tokenizer")
    onnx_name = next(f for f in model.source.files if f.endswith(".onnx"))
    plan = plan_onnx(model.root / onnx_name, tokenizer.root)
    # Keep only the tokenizer files the entry names: the MiniLM directory also holds
    # training configs that do not belong with the ONNX graph.
    wanted = {"model.onnx", *tokenizer.source.files}
    files = {rel: path for rel, path in plan.files.items() if rel in wanted}
    missing = wanted - set(files)
    if missing:
        raise UnsupportedSource(f"tokenizer files missing: {', '.join(sorted(missing))}")
    return FilePlan(files=files, source=lineage_source)


def _write_rules_spec(located: Located, work: Path) -> None:
    definition = located.definition
    engine = located.package("engine")
    work.mkdir(parents=True)
    for rel in engine.source.copy:
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(engine.root / rel, target)
    spec = {
        "task": definition.task,
        "runtime": definition.runtime,  # rules, or a program's own runtime (espeak-ng)
        "format": "rules",
        "engine": definition.engine,
        "package": engine.source.package or engine.source.distribution,
        "package_version": engine.version,
        "files": list(engine.source.copy),
    }
    (work / NATIVE_SPEC).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def _engine_params(located: Located) -> dict[str, Any]:
    """Params read from an engine when it is registered: espeak-ng's installed voices, so
    that `GET /v1/models` lists them without loading the model."""
    if located.definition.engine != "espeak-ng":
        return {}
    from openmaas.runtimes.espeak import installed_voices

    command = located.package("engine").source.command
    voices = installed_voices(command or "espeak-ng")
    if not voices:
        raise UnsupportedSource("espeak-ng lists no voices (espeak-ng --voices)")
    return {"voices": list(voices)}


def _write_linear_head(located: Located, work: Path) -> dict[str, Any]:
    # Imported here: joblib is only needed when an intent head is actually converted.
    from openmaas.catalog import sklearn_heads

    definition = located.definition
    model = located.package("model")
    joblib_files = [f for f in model.source.files if f.endswith(".joblib")]
    label_file = next(f for f in joblib_files if "label" in f)
    head_file = next(f for f in joblib_files if f != label_file)
    head = sklearn_heads.read_logistic_regression(model.root / head_file)
    head = head.with_labels(sklearn_heads.read_label_map(model.root / label_file))
    params = definition.params
    sklearn_heads.write_linear_head(
        head,
        work,
        task=definition.task,
        encoder=str(params["encoder"]),
        pooling=str(params.get("pooling", "mean")),
        normalize=params.get("normalize"),
        source={
            "distribution": model.source.distribution,
            "version": model.version,
            "files": [head_file, label_file],
        },
    )
    return {"num_labels": len(head.labels), "probability": head.probability}
