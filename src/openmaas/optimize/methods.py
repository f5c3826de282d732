"""Optimization methods: what each one applies to, its settings, and how it builds a version.

A method is one `Method` value in `METHODS`. The job kind checks a request against it up
front (`applies_to`, `check`); a worker then calls `build` with a `BuildContext` (the opened
parent, the method's settings, a scratch folder, the output folder, the job's files) and gets
a `Built`: the runtime that serves the output folder, the version params it needs, and any
metrics the method measured itself (an export's agreement with its parent). Everything else
(quality against the parent, speed, size, lineage, publishing) is the runner's, the same for
every method.

A new method is a module with a build function and a `Method(...)`, listed in
`optimize.registry`.

Example::

    method = Method(name="onnx", summary="...", defaults={"atol": 1e-4},
                    runtimes=frozenset({"transformers"}), tasks=frozenset({"embedding"}),
                    suffix="onnx", build=build_onnx, checks=(number("atol", 0, 1),))
    settings = method.check({"atol": 1e-3})
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.errors import InvalidRequest
from openmaas.registry.entities import ModelVersion

if TYPE_CHECKING:
    from openmaas.jobs.context import JobContext
    from openmaas.registry.files import OpenedVersion
    from openmaas.runtimes.base import LoadedModel, LoadOptions
    from openmaas.training.recipe import Example


@dataclass(frozen=True, slots=True)
class Built:
    """What a method made in the output folder."""

    runtime: str  # the runtime that serves it
    params: dict[str, Any]  # the new version's params (labels, pooling, input limits, ...)
    metrics: dict[str, float] = field(default_factory=dict)  # measured by the method itself


@dataclass
class BuildContext:
    """One build: the parent, the checked settings, and where to work and write."""

    job: JobContext
    parent: OpenedVersion
    settings: Mapping[str, Any]
    work_dir: Path  # scratch, removed after the job
    output_dir: Path  # becomes the new version's files
    options: LoadOptions  # how to load models for checks (device, threads)
    # The job's files, read on demand: `examples("training")` / `examples("eval")`.
    read_examples: Callable[[str], Sequence[Example]] = lambda which: ()
    # What loading the parent added to the worker's resident memory, once it is loaded.
    parent_resident: int | None = None
    # The word vectors a `distill` job's `settings.embeddings` pinned, opened for the run.
    embeddings: OpenedVersion | None = None

    @property
    def version(self) -> ModelVersion:
        return self.parent.version

    @cached_property
    def parent_model(self) -> LoadedModel:
        """The parent, loaded through its serving runtime (once; the runner unloads it)."""
        from openmaas.runtimes.base import ModelSource, get_runtime

        source = ModelSource.from_version(self.version, self.parent.directory)
        before = resident_bytes()
        model = get_runtime(self.version.runtime).load(source, self.options)
        after = resident_bytes()
        if before is not None and after is not None:
            self.parent_resident = max(after - before, 0)
        return model

    def message(self, text: str) -> None:
        self.job.message(text)

    def check_stop(self, where: str) -> None:
        from openmaas.jobs.context import JobStopped

        if self.job.should_stop():
            raise JobStopped(f"stopped {where}")

    def copy_parent_files(self, *, skip: Callable[[Path], bool] = lambda path: False) -> None:
        """The parent's files into the output folder, but its manifest and what `skip` says."""
        for path in self.parent.directory.rglob("*"):
            if not path.is_file() or path.name == "openmaas.json" or skip(path):
                continue
            target = self.output_dir / path.relative_to(self.parent.directory)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)


def resident_bytes() -> int | None:
    """This process's resident memory (Linux `/proc`; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


Checker = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    summary: str  # one line: what it does
    defaults: Mapping[str, Any]  # every setting it takes, with its default
    runtimes: frozenset[str]  # the parent runtimes it starts from
    tasks: frozenset[str]  # the parent tasks it applies to
    suffix: str  # the derived model name: `<parent>-<suffix>`
    build: Callable[[BuildContext], Built]
    checks: Sequence[Checker] = ()  # each raises InvalidRequest naming `settings.<name>`
    # distillation: the file it learns from; or a function of the checked settings (a prune
    # that fine-tunes afterwards)
    needs_training_file: bool | Callable[[Mapping[str, Any]], bool] = False
    # Whether these (checked) settings read examples from the job's training_file or
    # eval_file, either one (static quantization calibrates on them): without one, a 400.
    needs_examples: Callable[[Mapping[str, Any]], bool] = lambda settings: False
    applies: Callable[[ModelVersion], bool] = lambda version: True  # finer than runtime/task
    # Checks that need the parent's files (how many layers its config has), run when the job
    # is created, on the opened parent; they may fill in defaults that depend on it. Each
    # raises InvalidRequest naming `settings.<name>`.
    check_parent: Callable[[dict[str, Any], OpenedVersion], None] | None = None

    def applies_to(self, version: ModelVersion) -> bool:
        return (
            version.runtime in self.runtimes
            and version.task in self.tasks
            and self.applies(version)
        )

    def learns_from_file(self, settings: Mapping[str, Any]) -> bool:
        """Whether a job with these (checked) settings needs a training file."""
        needs = self.needs_training_file
        return needs(settings) if callable(needs) else needs

    def check(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The settings with defaults filled in; 400 naming a wrong one."""
        for name in given:
            if name not in self.defaults:
                raise InvalidRequest(
                    f"method {self.name!r} has no setting {name!r} (settings: "
                    f"{', '.join(self.defaults) or 'none'})",
                    param=f"settings.{name}",
                )
        resolved = {**self.defaults, **given}
        for check in self.checks:
            check(resolved)
        return resolved


# -- setting checks, shared by the methods --------------------------------------------------------


def number(name: str, low: float, high: float, *, low_open: bool = False) -> Checker:
    """`name` is a number in [low, high] ((low, high] with `low_open`), stored as a float."""

    def check(settings: dict[str, Any]) -> None:
        value = settings.get(name)
        ok = False
        if not isinstance(value, bool) and isinstance(value, int | float):
            ok = (low < value if low_open else low <= value) and value <= high
        if not ok:
            bound = "above" if low_open else "at least"
            raise InvalidRequest(
                f"settings.{name} must be a number {bound} {low:g} and at most {high:g}, "
                f"got {value!r}",
                param=f"settings.{name}",
            )
        settings[name] = float(value)  # type: ignore[arg-type]  # checked above

    return check


def integer(name: str, low: int, high: int, *, optional: bool = False) -> Checker:
    def check(settings: dict[str, Any]) -> None:
        value = settings.get(name)
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidRequest(
                f"settings.{name} must be a whole number from {low} to {high}, got {value!r}",
                param=f"settings.{name}",
            )

    return check


def boolean(*names: str) -> Checker:
    def check(settings: dict[str, Any]) -> None:
        for name in names:
            if not isinstance(settings.get(name), bool):
                raise InvalidRequest(
                    f"settings.{name} must be true or false, got {settings.get(name)!r}",
                    param=f"settings.{name}",
                )

    return check


def choice(name: str, options: Sequence[str]) -> Checker:
    def check(settings: dict[str, Any]) -> None:
        if settings.get(name) not in options:
            raise InvalidRequest(
                f"settings.{name} must be one of {', '.join(options)}, got {settings.get(name)!r}",
                param=f"settings.{name}",
            )

    return check
