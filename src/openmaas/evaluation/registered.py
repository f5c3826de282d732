"""Evaluating a registered version on a registered file, synchronously, end to end: resolve
and pin the version as the caller sees it, check the file (visible, validated, of the
model's task, not too large), open the version's files, load them with their serving runtime
on the CPU, score (`evaluation.scoring.score`), unload, close.

Every refusal is a 400 naming the request's parameter: `model` (not found, or of a task that
cannot be evaluated), `file` (not found, not a validated dataset, examples of another task,
more than `max_examples`). Callers that compare two versions pass a different `param` for
the second (`compare_to`).

Example::

    report = evaluate_reference(registry, datasets, "sentiment@production", "file-1a2b",
                                caller=caller)
    report.model, report.metrics["macro_f1"]  # "sentiment:3", 0.91
"""

from __future__ import annotations

from collections.abc import Sequence

from openmaas.auth.access import can_see, require_caller
from openmaas.auth.entities import SYSTEM, Principal, project_member
from openmaas.datasets.formats import Example
from openmaas.datasets.service import Dataset, DatasetService, DatasetStatus
from openmaas.errors import InvalidRequest, NotFound
from openmaas.evaluation.report import EvaluationReport
from openmaas.evaluation.scoring import OnBatch, check_task, score
from openmaas.registry.composition import Registry
from openmaas.registry.entities import ModelVersion, VersionPin
from openmaas.registry.files import OpenedVersion
from openmaas.registry.names import qualified
from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime

DEFAULT_MAX_EXAMPLES = 10_000  # OPENMAAS_MAX_EVAL_EXAMPLES


def resolve_version(
    registry: Registry, reference: str, *, caller: Principal, param: str = "model"
) -> ModelVersion:
    """The version `reference` names as `caller` resolves it (its own project's model of
    that name, else a public one), of a task evaluations score; 400 naming `param`."""
    require_caller(caller)
    try:
        version = registry.resolve(reference, caller=caller)
    except (NotFound, InvalidRequest) as exc:
        raise InvalidRequest(
            f"model {reference!r}: {exc.message}", param=param, code="model_not_found"
        ) from None
    if not can_see(version.project, version.public, caller):
        raise InvalidRequest(f"model {reference!r} not found", param=param, code="model_not_found")
    check_task(version.task, param=param)
    return version


def pin_version(registry: Registry, version: ModelVersion) -> VersionPin:
    """`version` pinned by row id and digest: a name deleted and registered again before a
    job runs is never followed."""
    exact = qualified(version.project, version.model)
    return registry.store.pin(exact, version.version, caller=SYSTEM)


def check_file(
    datasets: DatasetService,
    file_id: str,
    task: str,
    *,
    caller: Principal,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    model: str = "the model",
) -> Dataset:
    """The dataset `file_id` if it can score a `task` model (`model` names it in messages);
    400 naming `file` otherwise. Reads the file's record, not its examples."""
    require_caller(caller)
    try:
        dataset = datasets.get(file_id, caller=caller)
    except (NotFound, InvalidRequest) as exc:
        # Its message names the file already ("no such file", "not a dataset").
        raise InvalidRequest(exc.message, param="file", code="file_not_found") from None
    if dataset.status is not DatasetStatus.PROCESSED:
        raise InvalidRequest(
            f"file {file_id} did not pass validation ({dataset.status_details}); see "
            f"GET /v1/datasets/{file_id}",
            param="file",
            code="invalid_file",
        )
    if dataset.task != task:
        raise InvalidRequest(
            f"file {file_id} holds {dataset.task} examples but {model} is a {task} model; "
            f"evaluate it on a file of {task} examples",
            param="file",
            code="task_mismatch",
        )
    _check_count(file_id, dataset.stats.rows, max_examples)
    return dataset


def load_examples(
    datasets: DatasetService,
    file_id: str,
    task: str,
    *,
    caller: Principal,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    model: str = "the model",
) -> list[Example]:
    """The file's valid examples, in file order, after `check_file`'s checks."""
    check_file(datasets, file_id, task, caller=caller, max_examples=max_examples, model=model)
    _, examples = datasets.load(file_id, caller=caller)
    _check_count(file_id, len(examples), max_examples)
    if not examples:
        raise InvalidRequest(f"file {file_id} holds no valid examples", param="file")
    return list(examples)


def evaluate_pinned(
    registry: Registry,
    datasets: DatasetService,
    pin: VersionPin,
    file_id: str,
    *,
    caller: Principal,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    examples: Sequence[Example] | None = None,
    threads: int | None = None,
    on_batch: OnBatch | None = None,
) -> EvaluationReport:
    """Score exactly the pinned version on the file's examples (or on `examples` already
    read from it, for a second version on the same file), on the CPU."""
    require_caller(caller)
    opened = registry.open_pinned(pin, caller=caller)
    dependencies: list[OpenedVersion] = []
    try:
        version = opened.version
        check_task(version.task)
        if examples is None:
            examples = load_examples(
                datasets,
                file_id,
                version.task,
                caller=caller,
                max_examples=max_examples,
                model=pin.reference,
            )
        options = LoadOptions(
            device="cpu",
            threads=threads,
            open_dependency=lambda reference: _open_dependency(
                registry, version, reference, dependencies
            ),
        )
        model = get_runtime(version.runtime).load(
            ModelSource.from_version(version, opened.directory), options
        )
        try:
            return score(model, version.task, examples, on_batch=on_batch)
        finally:
            model.unload()
    finally:
        for dependency in dependencies:
            dependency.close()
        opened.close()


def evaluate_reference(
    registry: Registry,
    datasets: DatasetService,
    reference: str,
    file_id: str,
    *,
    caller: Principal,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    threads: int | None = None,
) -> EvaluationReport:
    """Resolve `reference` as `caller` does (`name`, `name:3`, `name@alias`), then
    `evaluate_pinned` on `file_id`. The file is checked before anything is loaded."""
    version = resolve_version(registry, reference, caller=caller)
    label = f"{version.model}:{version.version}"
    check_file(
        datasets, file_id, version.task, caller=caller, max_examples=max_examples, model=label
    )
    return evaluate_pinned(
        registry,
        datasets,
        pin_version(registry, version),
        file_id,
        caller=caller,
        max_examples=max_examples,
        threads=threads,
    )


def _open_dependency(
    registry: Registry, owner: ModelVersion, reference: str, opened: list[OpenedVersion]
) -> ModelSource:
    """A model the version names (a linear head's encoder), resolved as the version's own
    project would (as the serving engine opens it): its own model of that name, else a
    public one; never another project's private model."""
    named = registry.resolve(reference, caller=project_member(owner.project))
    exact = f"{qualified(named.project, named.model)}:{named.version}"
    files = registry.open_files(exact, caller=SYSTEM)
    opened.append(files)
    return ModelSource.from_version(files.version, files.directory)


def _check_count(file_id: str, count: int, max_examples: int) -> None:
    if count > max_examples:
        raise InvalidRequest(
            f"file {file_id} holds {count} examples; an evaluation scores at most "
            f"{max_examples} (OPENMAAS_MAX_EVAL_EXAMPLES): upload a sample of it",
            param="file",
            code="file_too_large",
        )
