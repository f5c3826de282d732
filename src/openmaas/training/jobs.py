"""Training jobs: created and watched through the API, run by worker processes.

`JobService` is the API side (create, list, retrieve, cancel, events, checkpoints), scoped
to the caller's project; it is also a `JobQueue`, the worker side of the same state machine
(claim, heartbeat, reclaim, finish). Creation validates everything it can up front: the
recipe, the task, the base model, the hyperparameters and the files (400 naming the
problem), then reads the files' examples while the job is `validating_files`, and queues it.

Example::

    jobs = JobService(db, registry=registry, datasets=datasets, recipes=load_recipes())
    job = jobs.create(JobRequest(training_file="file-1a2b", recipe="textcnn"), principal)
    jobs.cancel(job.id, principal)
    page = jobs.events(job.id, principal, limit=20)
"""

from __future__ import annotations

import importlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy import and_, or_, select

from openmaas.auth.access import can_see, is_admin
from openmaas.auth.entities import DEFAULT_PROJECT, SYSTEM, Principal
from openmaas.errors import Conflict, InvalidRequest, NotFound, OpenMaaSError
from openmaas.registry.composition import Registry
from openmaas.registry.names import check_alias, check_model_name
from openmaas.settings import Settings
from openmaas.store.database import Database
from openmaas.store.tables import DatasetRow, JobCheckpointRow, JobEventRow, JobRow
from openmaas.training.entities import (
    BATCH_NAMES,
    EPOCH_NAMES,
    FINISHED,
    LEARNING_RATE_NAMES,
    Job,
    JobCheckpoint,
    JobEvent,
    JobStatus,
    Page,
)
from openmaas.training.queue import (
    JobQueue,
    checkpoint_entity,
    event_entity,
    job_entity,
    latest_progress,
    now,
)
from openmaas.training.recipe import Example, Recipe

logger = logging.getLogger("openmaas.training")

MAX_PAGE = 100
MAX_SUFFIX_CHARS = 64
SEED_LIMIT = 2**31 - 1
# A job's registered name: `<suffix or recipe>-<first hex digits of the job id>`.
SHORT_ID_CHARS = 8
FILE_READY = "processed"

# Our job options and the recipe hyperparameters that carry them (first name the recipe has).
EARLY_STOPPING_PARAMS = {
    "patience": ("patience", "early_stopping_patience"),
    "min_delta": ("early_stopping_min_delta", "min_delta"),
    "metric": ("early_stopping_metric",),
}
CLASS_IMBALANCE_PARAMS = ("class_weighting", "class_imbalance")
MULTIPLIER_NAMES = ("learning_rate_multiplier",)
# Base models and the recipe that fine-tunes them, best first: a transformers checkpoint is
# fine-tuned whole; any embedding model can carry a trained head. The first whose recipe
# trains the dataset's task wins: a token-classification file gets the NER recipe.
BASE_MODEL_RECIPES = (
    ("transformers", None, "finetune_transformer"),
    ("transformers", None, "finetune_transformer_ner"),
    (None, "embedding", "frozen_encoder"),
)
# Tasks learnt from plain texts: a file of `{"text"}` examples (read as text-generation)
# trains any of them, e.g. word2vec's embedding.
PLAIN_TEXT_TASKS = frozenset({"text-generation", "embedding"})


def new_job_id() -> str:
    return f"ftjob-{secrets.token_hex(12)}"


def new_checkpoint_id() -> str:
    return f"ftckpt-{secrets.token_hex(12)}"


class DatasetSource(Protocol):
    """What jobs need of the dataset service (`datasets.service.DatasetService`): a file's
    examples, and its reproducible (train, validation, test) split."""

    def load(
        self, dataset_id: str, project: str | None = None
    ) -> tuple[Any, Sequence[Example]]: ...

    def splits(
        self,
        dataset_id: str,
        project: str | None = None,
        *,
        seed: int = 0,
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
    ) -> tuple[Sequence[Example], Sequence[Example], Sequence[Example]]: ...


@dataclass(frozen=True, slots=True)
class EarlyStopping:
    patience: int
    min_delta: float = 0.0
    metric: str | None = None  # the recipe's default when None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a caller asks for. `recipe` may be None when `base_model` implies one."""

    training_file: str
    recipe: str | None = None
    base_model: str | None = None
    task: str | None = None
    validation_file: str | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    early_stopping: EarlyStopping | None = None
    class_imbalance: str | None = None  # none | weighted | oversample
    suffix: str | None = None
    seed: int | None = None
    model_name: str | None = None  # register as the next version of this model
    alias: str | None = None
    validation_split: float = 0.1  # of the training file, when no validation file is given
    test_split: float = 0.1  # of the training file: the registered metrics come from it
    options: Mapping[str, Any] = field(default_factory=dict)  # recorded as given (OpenAI)


@dataclass(frozen=True, slots=True)
class SplitSizes:
    train: int
    validation: int
    test: int


def split_examples(
    datasets: DatasetSource, job: Job
) -> tuple[Sequence[Example], Sequence[Example], Sequence[Example]]:
    """The job's train, validation and test examples: the same on every run of the job.
    (Any project's files: who may use them was checked when the job was created.)"""
    test = float(job.options.get("test_split", 0.1))
    if job.validation_file is not None:
        train, _, tested = datasets.splits(
            job.training_file, seed=job.seed, ratios=(1 - test, 0.0, test)
        )
        _, given = datasets.load(job.validation_file)
        return train, given, tested
    validation = float(job.options.get("validation_split", 0.1))
    train, held, tested = datasets.splits(
        job.training_file, seed=job.seed, ratios=(1 - validation - test, validation, test)
    )
    return train, held, tested


def load_recipes(extra: Sequence[str] = ()) -> dict[str, Recipe]:
    """The built-in recipes plus `extra` ones, each `module:attribute` naming a Recipe
    instance or class (OPENMAAS_EXTRA_RECIPES)."""
    from openmaas.training.recipes import RECIPES

    found: dict[str, Recipe] = dict(RECIPES)
    for target in extra:
        module_name, _, attribute = target.partition(":")
        if not module_name or not attribute:
            raise OpenMaaSError(f"extra recipe {target!r}: write it as module:attribute")
        value = getattr(importlib.import_module(module_name), attribute)
        recipe = value() if isinstance(value, type) else value
        if not isinstance(recipe, Recipe):
            raise OpenMaaSError(f"extra recipe {target!r} is not a Recipe")
        found[recipe.name] = recipe
    return found


def build_job_service(settings: Settings, db: Database, registry: Registry) -> JobService:
    """The job service of a server process, from its settings."""
    from openmaas.datasets.service import DatasetService

    return JobService(
        db,
        registry=registry,
        datasets=DatasetService(db, registry.artifacts),
        recipes=load_recipes(settings.extra_recipes),
        heartbeat_timeout_s=settings.job_heartbeat_timeout_s,
        max_attempts=settings.job_max_attempts,
    )


def _job_not_found(job_id: str) -> NotFound:
    return NotFound(
        f"fine-tuning job {job_id!r} not found", param="fine_tuning_job_id", code="job_not_found"
    )


class JobService(JobQueue):
    """Jobs of the caller's project (admins see all); the queue for workers besides."""

    def __init__(
        self,
        db: Database,
        *,
        registry: Registry,
        datasets: DatasetSource,
        recipes: Mapping[str, Recipe],
        heartbeat_timeout_s: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        super().__init__(db, heartbeat_timeout_s=heartbeat_timeout_s, max_attempts=max_attempts)
        self.registry = registry
        self.datasets = datasets
        self.recipes = dict(recipes)

    # -- creating ------------------------------------------------------------------------------

    def openai_request(
        self,
        principal: Principal | None,
        *,
        model: str,
        training_file: str,
        validation_file: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> JobRequest:
        """Map OpenAI's create call onto a recipe: `model` names a recipe (trained from
        scratch) or a registered base model (fine-tuned by the recipe that fits it)."""
        given = {k: v for k, v in (hyperparameters or {}).items() if v is not None}
        recipe_name: str | None
        base: str | None = None
        if model in self.recipes:
            recipe_name = model
        else:
            base = model
            recipe_name = self._recipe_for_base(model, training_file, principal)
        recipe = self._recipe(recipe_name)
        return JobRequest(
            training_file=training_file,
            validation_file=validation_file,
            recipe=recipe_name,
            base_model=base,
            hyperparameters=self._from_openai_names(recipe, given),
            suffix=suffix,
            seed=seed,
            options={**(options or {}), "model": model, "openai_hyperparameters": given},
        )

    def create(self, request: JobRequest, principal: Principal | None) -> Job:
        """Validate, record and queue a job (`prepare` then `submit`)."""
        return self.submit(self.prepare(request, principal))

    def prepare(self, request: JobRequest, principal: Principal | None) -> JobRow:
        """Every check that needs no file contents; 400 naming the problem. Nothing is
        written: the caller charges quotas between this and `submit`."""
        if request.recipe is None:
            if request.base_model is None:
                raise InvalidRequest("name a recipe (or a base model)", param="recipe")
            recipe = self._recipe(
                self._recipe_for_base(request.base_model, request.training_file, principal)
            )
        else:
            recipe = self._recipe(request.recipe)
        project = principal.project if principal is not None else DEFAULT_PROJECT
        train = self._dataset(request.training_file, "training_file", principal)
        task = request.task or _default_task(recipe, train.task)
        if not _holds_examples_for(train.task, task):
            raise InvalidRequest(
                f"training file {train.id} holds {train.task} examples, not {task}",
                param="task",
            )
        if task not in recipe.tasks:
            raise InvalidRequest(
                f"recipe {recipe.name!r} trains {', '.join(recipe.tasks)}, not {task}",
                param="task",
                code="wrong_task",
            )
        if request.validation_file is not None:
            validation = self._dataset(request.validation_file, "validation_file", principal)
            if not _holds_examples_for(validation.task, task):
                raise InvalidRequest(
                    f"validation file {validation.id} holds {validation.task} examples; the "
                    f"training file holds {task}",
                    param="validation_file",
                )
        base_version = self._base_model(recipe, request.base_model, principal)
        rows = train.stats.get("rows") if isinstance(train.stats, dict) else None
        given = self._hyperparameters(recipe, request, rows if isinstance(rows, int) else 1)
        self._check_splits(request)
        job_id = new_job_id()
        suffix = self._suffix(request.suffix)
        model_name = (
            request.model_name or f"{suffix or recipe.name}-{job_id[6 : 6 + SHORT_ID_CHARS]}"
        )
        self._check_model_name(model_name, project, principal)
        if request.alias is not None:
            check_alias(request.alias)
        seed = request.seed if request.seed is not None else secrets.randbelow(SEED_LIMIT)
        if not 0 <= seed <= SEED_LIMIT:
            raise InvalidRequest(f"seed must be 0..{SEED_LIMIT}", param="seed")
        return JobRow(
            id=job_id,
            project=project,
            key_id=principal.key_id if principal is not None else None,
            created_by=principal.actor if principal is not None else "",
            recipe=recipe.name,
            task=task,
            base_model=request.base_model,
            training_file=request.training_file,
            validation_file=request.validation_file,
            hyperparameters=given,  # resolved against the examples in `submit`
            options={
                **request.options,
                "requested_hyperparameters": given,
                "validation_split": request.validation_split,
                "test_split": request.test_split,
                "dataset_sha256": train.content_sha256 or train.sha256,
                "base_version": base_version,
                "explicit_model_name": request.model_name is not None,
                "learning_rate_multiplier": _learning_rate_multiplier(recipe, given),
            },
            suffix=suffix,
            seed=seed,
            model_name=model_name,
            alias=request.alias,
            status=JobStatus.VALIDATING_FILES.value,
            metrics={},
            attempts=0,
            cancel_requested=False,
            created_at=now(),
        )

    def submit(self, prepared: JobRow) -> Job:
        """Record the job, read its files' examples, resolve the hyperparameters against
        them and queue it. Files that cannot be trained on fail the job (and raise 400)."""
        with self.db.transaction() as session:
            session.add(prepared)
            session.flush()
            self._event(session, prepared.id, f"Validating training file: {prepared.training_file}")
            job = job_entity(prepared)
        recipe = self.recipes[job.recipe]
        try:
            sizes, resolved = self._validate_contents(job, recipe)
        except Exception as exc:
            if isinstance(exc, OpenMaaSError):
                message, param = exc.message, exc.param
            else:
                logger.exception("job %s: its files could not be read", job.id)
                message, param = "the files could not be read (see the server log)", None
            self._fail_validation(job.id, message, param)
            if isinstance(exc, OpenMaaSError) and 400 <= exc.status_code < 500:
                raise InvalidRequest(
                    f"{message} (job {job.id} failed)", param=param, code="invalid_training_file"
                ) from exc
            raise
        with self.db.transaction() as session:
            row = session.get(JobRow, job.id, with_for_update=True)
            assert row is not None
            if row.status != JobStatus.VALIDATING_FILES.value:  # cancelled meanwhile
                return job_entity(row)
            row.hyperparameters = resolved
            self._move(row, JobStatus.QUEUED)
            self._event(
                session,
                job.id,
                f"Files validated: {sizes.train} training, {sizes.validation} validation and "
                f"{sizes.test} test examples; job queued",
                data={"train": sizes.train, "validation": sizes.validation, "test": sizes.test},
            )
            return job_entity(row)

    def _fail_validation(self, job_id: str, message: str, param: str | None) -> None:
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != JobStatus.VALIDATING_FILES.value:
                return  # cancelled meanwhile
            self._finish(row, JobStatus.FAILED)
            row.error = {"code": "invalid_training_file", "message": message, "param": param}
            self._event(session, job_id, f"File validation failed: {message}", level="error")

    def _validate_contents(self, job: Job, recipe: Recipe) -> tuple[SplitSizes, dict[str, Any]]:
        train, validation, test = split_examples(self.datasets, job)
        if not train:
            raise InvalidRequest(
                f"file {job.training_file} leaves no training examples", param="training_file"
            )
        if not test:
            raise InvalidRequest(
                f"file {job.training_file} is too small to hold out a test split "
                f"({job.options.get('test_split')} of it); upload more examples",
                param="training_file",
            )
        if job.task == "text-classification":
            labels = {str(example.get("label")) for example in train}
            if len(labels) < 2:
                raise InvalidRequest(
                    f"the training examples of {job.training_file} carry "
                    f"{len(labels)} label; a classifier needs at least 2",
                    param="training_file",
                )
        try:
            resolved = recipe.resolve(job.hyperparameters, len(train))
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="hyperparameters") from None
        return SplitSizes(len(train), len(validation), len(test)), resolved

    # -- checks --------------------------------------------------------------------------------

    def _recipe(self, name: str) -> Recipe:
        recipe = self.recipes.get(name)
        if recipe is None:
            known = ", ".join(sorted(self.recipes)) or "none"
            raise InvalidRequest(
                f"unknown recipe {name!r} (recipes: {known})", param="recipe", code="unknown_recipe"
            )
        return recipe

    def _recipe_for_base(self, model: str, training_file: str, principal: Principal | None) -> str:
        version = self._resolve_base(model, principal)
        with self.db.transaction() as session:
            task = session.scalar(select(DatasetRow.task).where(DatasetRow.id == training_file))
        for runtime, base_task, name in BASE_MODEL_RECIPES:
            recipe = self.recipes.get(name)
            if recipe is None or (task is not None and task not in recipe.tasks):
                continue
            if runtime in (None, version.runtime) and base_task in (None, version.task):
                return name
        raise InvalidRequest(
            f"no recipe fine-tunes {model!r} (a {version.runtime} {version.task} model) "
            f"for {task or 'this file'}; name a recipe instead ({', '.join(sorted(self.recipes))})",
            param="model",
        )

    def _resolve_base(self, reference: str, principal: Principal | None = None) -> Any:
        try:
            version = self.registry.resolve(reference, caller=SYSTEM)
        except (NotFound, InvalidRequest) as exc:
            known = ", ".join(sorted(self.recipes))
            raise InvalidRequest(
                f"model {reference!r} is neither a recipe ({known}) nor a model registered "
                f"here: {exc.message}",
                param="model",
                code="model_not_found",
            ) from None
        if not can_see(version.project, version.public, principal):
            raise InvalidRequest(
                f"model {reference!r} not found", param="model", code="model_not_found"
            )
        return version

    def _base_model(
        self, recipe: Recipe, reference: str | None, principal: Principal | None
    ) -> str | None:
        if reference is None:
            if recipe.needs_base_model:
                raise InvalidRequest(
                    f"recipe {recipe.name!r} fine-tunes a base model: name one", param="base_model"
                )
            return None
        if not recipe.needs_base_model:
            raise InvalidRequest(
                f"recipe {recipe.name!r} trains from scratch and takes no base model",
                param="base_model",
            )
        version = self._resolve_base(reference, principal)
        return f"{version.model}:{version.version}"

    def _dataset(self, file_id: str, param: str, principal: Principal | None) -> DatasetRow:
        with self.db.transaction() as session:
            row = session.get(DatasetRow, file_id)
        if row is None or not (
            is_admin(principal) or (principal and row.project == principal.project)
        ):
            raise InvalidRequest(f"file {file_id!r} not found", param=param, code="file_not_found")
        if row.status != FILE_READY:
            raise InvalidRequest(
                f"file {file_id} did not pass validation ({row.status}); see its report",
                param=param,
                code="invalid_file",
            )
        if not row.task:
            raise InvalidRequest(
                f"file {file_id} holds no training examples (purpose {row.purpose!r})",
                param=param,
                code="invalid_file",
            )
        return row

    def _hyperparameters(
        self, recipe: Recipe, request: JobRequest, n_examples: int
    ) -> dict[str, Any]:
        given = dict(request.hyperparameters)
        if request.early_stopping is not None:
            stopping = request.early_stopping
            values: dict[str, Any] = {"patience": stopping.patience, "metric": stopping.metric}
            if stopping.min_delta:
                values["min_delta"] = stopping.min_delta
            for option, value in values.items():
                if value is not None:
                    name = _param_name(recipe, EARLY_STOPPING_PARAMS[option], "early_stopping")
                    given[name] = value
        if request.class_imbalance is not None:
            name = _param_name(recipe, CLASS_IMBALANCE_PARAMS, "class_imbalance")
            given[name] = request.class_imbalance
        try:
            # Names and values now, before any quota is charged; "auto" values are resolved
            # again against the examples once they are read.
            recipe.resolve(given, max(1, n_examples))
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="hyperparameters") from None
        return given

    @staticmethod
    def _from_openai_names(recipe: Recipe, given: Mapping[str, Any]) -> dict[str, Any]:
        """OpenAI's n_epochs, batch_size and learning_rate_multiplier in the recipe's names
        ("auto" keeps the recipe's default); other names pass through as the recipe's own."""
        defaults = recipe.defaults()
        mapped: dict[str, Any] = {}
        for option, value in given.items():
            if value == "auto":
                continue
            if option == "n_epochs":
                mapped[_param_name(recipe, EPOCH_NAMES, "hyperparameters.n_epochs")] = value
            elif option == "batch_size":
                mapped[_param_name(recipe, BATCH_NAMES, "hyperparameters.batch_size")] = value
            elif option == "learning_rate_multiplier" and option not in defaults:
                name = _param_name(recipe, LEARNING_RATE_NAMES, "hyperparameters." + option)
                mapped[name] = float(defaults[name]) * float(value)
            else:
                mapped[option] = value
        return mapped

    @staticmethod
    def _check_splits(request: JobRequest) -> None:
        for name in ("validation_split", "test_split"):
            value = getattr(request, name)
            if not 0 <= value <= 0.5:
                raise InvalidRequest(f"{name} must be between 0 and 0.5", param=name)
        if request.test_split <= 0:
            raise InvalidRequest(
                "test_split must be above 0: the registered metrics come from it",
                param="test_split",
            )

    @staticmethod
    def _suffix(suffix: str | None) -> str | None:
        if suffix is None or suffix == "":
            return None
        if len(suffix) > MAX_SUFFIX_CHARS:
            raise InvalidRequest(f"suffix: at most {MAX_SUFFIX_CHARS} characters", param="suffix")
        try:
            check_model_name(suffix)
        except InvalidRequest:
            raise InvalidRequest(
                f"suffix {suffix!r}: use letters, digits, '.', '_' or '-', starting with a "
                "letter or digit (it begins the fine-tuned model's name)",
                param="suffix",
            ) from None
        return suffix

    def _check_model_name(self, name: str, project: str, principal: Principal | None) -> None:
        check_model_name(name)
        try:
            existing = self.registry.get_model(name, caller=SYSTEM)
        except NotFound:
            return
        if existing.project != project and not is_admin(principal):
            raise InvalidRequest(
                f"the model name {name!r} is taken by another project; choose another",
                param="model_name",
                code="name_taken",
            )

    # -- reading -------------------------------------------------------------------------------

    def get(self, job_id: str, principal: Principal | None) -> Job:
        with self.db.transaction() as session:
            row = self._visible(session, job_id, principal)
            progress = latest_progress(session, job_id) if row.status == "running" else None
            return job_entity(row, progress)

    def list(
        self, principal: Principal | None, *, after: str | None = None, limit: int = 20
    ) -> Page[Job]:
        """Newest first; `after` is the last job id of the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        with self.db.transaction() as session:
            query = select(JobRow)
            if not is_admin(principal):
                assert principal is not None
                query = query.where(JobRow.project == principal.project)
            if after is not None:
                cursor = self._visible(session, after, principal)
                query = query.where(
                    or_(
                        JobRow.created_at < cursor.created_at,
                        and_(JobRow.created_at == cursor.created_at, JobRow.id < cursor.id),
                    )
                )
            rows = session.scalars(
                query.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit + 1)
            ).all()
            jobs = [
                job_entity(
                    row, latest_progress(session, row.id) if row.status == "running" else None
                )
                for row in rows[:limit]
            ]
            return Page(jobs, has_more=len(rows) > limit)

    def events(
        self,
        job_id: str,
        principal: Principal | None,
        *,
        after: int | None = None,
        limit: int = 20,
        order: Literal["desc", "asc"] = "desc",
    ) -> Page[JobEvent]:
        """A job's events, newest first as OpenAI lists them (or oldest first for followers);
        `after` is the last event id of the previous page."""
        limit = max(1, min(limit, 1000))
        with self.db.transaction() as session:
            self._visible(session, job_id, principal)
            query = select(JobEventRow).where(JobEventRow.job_id == job_id)
            if order == "desc":
                if after is not None:
                    query = query.where(JobEventRow.id < after)
                query = query.order_by(JobEventRow.id.desc())
            else:
                if after is not None:
                    query = query.where(JobEventRow.id > after)
                query = query.order_by(JobEventRow.id)
            rows = session.scalars(query.limit(limit + 1)).all()
            return Page([event_entity(row) for row in rows[:limit]], has_more=len(rows) > limit)

    def checkpoints(
        self,
        job_id: str,
        principal: Principal | None,
        *,
        after: str | None = None,
        limit: int = 10,
    ) -> Page[JobCheckpoint]:
        """A job's checkpoints, newest first; `after` is the last id of the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        with self.db.transaction() as session:
            self._visible(session, job_id, principal)
            query = select(JobCheckpointRow).where(JobCheckpointRow.job_id == job_id)
            if after is not None:
                cursor = session.get(JobCheckpointRow, after)
                if cursor is None or cursor.job_id != job_id:
                    raise NotFound(f"checkpoint {after!r} not found", param="after")
                query = query.where(
                    or_(
                        JobCheckpointRow.created_at < cursor.created_at,
                        and_(
                            JobCheckpointRow.created_at == cursor.created_at,
                            JobCheckpointRow.id < cursor.id,
                        ),
                    )
                )
            rows = session.scalars(
                query.order_by(
                    JobCheckpointRow.created_at.desc(), JobCheckpointRow.id.desc()
                ).limit(limit + 1)
            ).all()
            return Page(
                [checkpoint_entity(row) for row in rows[:limit]], has_more=len(rows) > limit
            )

    # -- cancelling ----------------------------------------------------------------------------

    def cancel(self, job_id: str, principal: Principal | None) -> Job:
        """A job not running yet is cancelled at once; a running one is asked to stop (its
        worker stops within seconds, keeping its last checkpoint)."""
        with self.db.transaction() as session:
            row = self._visible(session, job_id, principal, lock=True)
            status = JobStatus(row.status)
            if status is JobStatus.CANCELLED:
                return job_entity(row)
            if status in FINISHED:
                raise Conflict(
                    f"fine-tuning job {job_id} has already {status.value}; nothing to cancel",
                    param="fine_tuning_job_id",
                    code="job_finished",
                )
            who = principal.actor if principal is not None else "the server"
            if status is JobStatus.RUNNING:
                if not row.cancel_requested:
                    row.cancel_requested = True
                    self._event(
                        session,
                        job_id,
                        f"Cancellation requested by {who}; the worker stops at its next step",
                    )
                return job_entity(row, latest_progress(session, job_id))
            row.cancel_requested = True
            self._finish(row, JobStatus.CANCELLED)
            self._event(session, job_id, f"Job cancelled by {who} before it started")
            return job_entity(row)

    def _visible(
        self, session: Any, job_id: str, principal: Principal | None, *, lock: bool = False
    ) -> JobRow:
        row: JobRow | None = session.get(JobRow, job_id, with_for_update=lock)
        # Another project's job answers exactly like a missing one.
        if row is None or not (
            is_admin(principal) or (principal and row.project == principal.project)
        ):
            raise _job_not_found(job_id)
        return row


def _default_task(recipe: Recipe, file_task: str | None) -> str:
    """The file's task, or the recipe's plain-text task when the file holds plain texts."""
    if file_task in PLAIN_TEXT_TASKS and file_task not in recipe.tasks:
        return next((task for task in recipe.tasks if task in PLAIN_TEXT_TASKS), file_task)
    return file_task or ""


def _holds_examples_for(file_task: str | None, task: str) -> bool:
    return file_task == task or (file_task in PLAIN_TEXT_TASKS and task in PLAIN_TEXT_TASKS)


def _param_name(recipe: Recipe, candidates: Sequence[str], param: str) -> str:
    """The first of `candidates` that names one of the recipe's hyperparameters."""
    defaults = recipe.defaults()
    for name in candidates:
        if name in defaults:
            return name
    raise InvalidRequest(
        f"recipe {recipe.name!r} has no hyperparameter for {param} ({' or '.join(candidates)})",
        param=param,
    )


def _learning_rate_multiplier(recipe: Recipe, given: Mapping[str, Any]) -> float | None:
    """The learning rate asked for, as a multiple of the recipe's default (OpenAI's view)."""
    defaults = recipe.defaults()
    factor = 1.0
    for name in MULTIPLIER_NAMES:
        value = given.get(name, defaults.get(name))
        if isinstance(value, int | float) and not isinstance(value, bool):
            factor = float(value)
    for name in LEARNING_RATE_NAMES:
        default = defaults.get(name)
        if isinstance(default, int | float) and default > 0:
            value = given.get(name, default)
            return factor * float(value) / float(default) if value != "auto" else factor
    return factor if any(name in defaults for name in MULTIPLIER_NAMES) else None
