"""Training as a job kind: a recipe trained on an uploaded dataset, published as a model.

`prepare` checks everything it can up front (the recipe, the task, the base model, the
hyperparameters and the files: 400 naming the problem) and pins the base model's version;
`check_inputs` reads the files' examples while the job is `validating_files` and resolves the
hyperparameters against them; `run` (`training.runner`) trains with the recipe on a worker.

Example::

    kind = TrainingJobKind(db, registry=registry, datasets=datasets, recipes=load_recipes())
    jobs = JobService(db, kinds=[kind])
    job = jobs.create("training", JobRequest(training_file="file-1a2b", recipe="textcnn"),
                      caller=caller)
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from openmaas.auth.access import can_see, is_admin
from openmaas.auth.entities import SYSTEM, Principal
from openmaas.errors import InvalidRequest, NotFound
from openmaas.jobs.context import CREATED_BY_ADMIN
from openmaas.jobs.entities import TRAINING, Job, NewJob
from openmaas.jobs.kinds import Admission
from openmaas.jobs.publish import check_publishable_name
from openmaas.registry.composition import Registry
from openmaas.registry.entities import VersionPin
from openmaas.registry.names import check_alias, check_model_name, qualified
from openmaas.settings import Settings
from openmaas.store.database import Database
from openmaas.store.tables import DatasetRow
from openmaas.training.hyperparameters import LEARNING_RATE_NAMES
from openmaas.training.recipe import Recipe
from openmaas.training.requests import (
    CLASS_IMBALANCE_PARAMS,
    EARLY_STOPPING_PARAMS,
    DatasetSource,
    JobRequest,
    load_recipes,
    param_name,
    split_examples,
)
from openmaas.training.resources import check_resources
from openmaas.word_vectors.saved import RUNTIME as WORD_VECTORS_RUNTIME

if TYPE_CHECKING:
    from openmaas.jobs.context import JobContext
    from openmaas.jobs.kinds import JobKind
    from openmaas.jobs.publish import JobOutput
    from openmaas.jobs.service import JobService

MAX_SUFFIX_CHARS = 64
SEED_LIMIT = 2**31 - 1
# A job's registered name: `<suffix or recipe>-<first hex digits of the job id>`.
SHORT_ID_CHARS = 8
FILE_READY = "processed"
MULTIPLIER_NAMES = ("learning_rate_multiplier",)
MAX_FOLDS = 20
CROSS_VALIDATION_FINALS = ("all", "best_fold")
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


def build_job_service(
    settings: Settings,
    db: Database,
    registry: Registry,
    *,
    extra_kinds: Sequence[JobKind] = (),
) -> JobService:
    """The job service of a server process, from its settings: the training, search,
    optimization and evaluation kinds and `extra_kinds` (the server adds batches)."""
    from openmaas.datasets.service import DatasetService
    from openmaas.evaluation.kind import EvaluationJobKind
    from openmaas.jobs.service import JobService
    from openmaas.optimize.kind import OptimizationJobKind
    from openmaas.training.search_kind import SearchJobKind

    datasets = DatasetService(db, registry.artifacts)
    training = TrainingJobKind(
        db,
        registry=registry,
        datasets=datasets,
        recipes=load_recipes(settings.extra_recipes),
        ray_address=settings.ray_address,
    )
    optimization = OptimizationJobKind(registry=registry, db=db, datasets=datasets)
    evaluation = EvaluationJobKind(
        registry=registry, datasets=datasets, max_examples=settings.max_eval_examples
    )
    return JobService(
        db,
        kinds=[training, SearchJobKind(training), optimization, evaluation, *extra_kinds],
        heartbeat_timeout_s=settings.job_heartbeat_timeout_s,
        max_attempts=settings.job_max_attempts,
    )


class TrainingJobKind:
    """The `training` job kind: recipes, their files and base models."""

    name = TRAINING
    failure_code = "training_failed"

    def __init__(
        self,
        db: Database,
        *,
        registry: Registry,
        datasets: DatasetSource,
        recipes: Mapping[str, Recipe],
        ray_address: str | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.datasets = datasets
        self.recipes = dict(recipes)
        # The Ray cluster jobs with `resources` (and search trials) run on; None: none.
        self.ray_address = ray_address

    # -- preparing -------------------------------------------------------------------------------

    def prepare(self, request: JobRequest, *, caller: Principal) -> NewJob:
        """Every check that needs no file contents; 400 naming the problem. Nothing is
        written: the caller charges quotas between this and `JobService.submit`."""
        if request.recipe is None:
            if request.base_model is None:
                raise InvalidRequest("name a recipe (or a base model)", param="recipe")
            recipe = self.recipe(
                self.recipe_for_base(request.base_model, request.training_file, caller=caller)
            )
        else:
            recipe = self.recipe(request.recipe)
        project = caller.project
        train = self._dataset(request.training_file, "training_file", caller)
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
            validation = self._dataset(request.validation_file, "validation_file", caller)
            if not _holds_examples_for(validation.task, task):
                raise InvalidRequest(
                    f"validation file {validation.id} holds {validation.task} examples; the "
                    f"training file holds {task}",
                    param="validation_file",
                )
        base_pin = self._base_model(recipe, request.base_model, caller)
        rows = train.stats.get("rows") if isinstance(train.stats, dict) else None
        given = self._hyperparameters(recipe, request, rows if isinstance(rows, int) else 1)
        vectors_pin = self._embeddings(given, caller)
        self._check_splits(request)
        job_id = new_job_id()
        suffix = self._suffix(request.suffix)
        model_name = (
            request.model_name or f"{suffix or recipe.name}-{job_id[6 : 6 + SHORT_ID_CHARS]}"
        )
        self._check_model_name(model_name, project, caller)
        if request.alias is not None:
            check_alias(request.alias)
        folds = _cross_validation(request)
        resources = check_resources(
            request.resources,
            recipe,
            ray_address=self.ray_address,
            hyperparameters=given,
            cross_validation=request.cross_validation,
            search=request.search is not None,
            base_model=request.base_model,
        )
        seed = request.seed if request.seed is not None else secrets.randbelow(SEED_LIMIT)
        if not 0 <= seed <= SEED_LIMIT:
            raise InvalidRequest(f"seed must be 0..{SEED_LIMIT}", param="seed")
        return NewJob(
            id=job_id,
            kind=self.name,
            project=project,
            key_id=caller.key_id,
            created_by=caller.actor,
            recipe=recipe.name,
            task=task,
            base_model=request.base_model,
            training_file=request.training_file,
            validation_file=request.validation_file,
            hyperparameters=given,  # resolved against the examples in `check_inputs`
            options={
                **request.options,
                "requested_hyperparameters": given,
                "validation_split": request.validation_split,
                "test_split": request.test_split,
                "dataset_sha256": train.content_sha256 or train.sha256,
                # The reference names it in lineage; the pin is what the run opens.
                "base_version": base_pin.reference if base_pin is not None else None,
                "base_version_pin": base_pin.to_dict() if base_pin is not None else None,
                "embeddings_version_pin": vectors_pin.to_dict() if vectors_pin else None,
                CREATED_BY_ADMIN: is_admin(caller),
                "explicit_model_name": request.model_name is not None,
                "learning_rate_multiplier": _learning_rate_multiplier(recipe, given),
                **folds,
                **({"resources": resources} if resources is not None else {}),
            },
            suffix=suffix,
            seed=seed,
            model_name=model_name,
            alias=request.alias,
        )

    def checking_message(self, job: NewJob) -> str:
        return f"Validating training file: {job.training_file}"

    def datasets_rows(self, file_id: str) -> int:
        """How many examples the (checked) file holds, as its stats say (1 when unknown)."""
        with self.db.transaction() as session:
            stats = session.scalar(select(DatasetRow.stats).where(DatasetRow.id == file_id))
        rows = stats.get("rows") if isinstance(stats, dict) else None
        return rows if isinstance(rows, int) and rows > 0 else 1

    def check_inputs(self, job: Job) -> Admission:
        """Read the files' examples: enough to train and test on, hyperparameters that fit."""
        recipe = self.recipe(job.recipe)
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
        folds = job.options.get("cross_validation")
        if isinstance(folds, int) and len(train) + len(test) < 2 * folds:
            raise InvalidRequest(
                f"file {job.training_file} holds {len(train) + len(test)} examples outside the "
                f"validation split: too few for {folds} folds of at least 2; ask for fewer",
                param="cross_validation",
            )
        try:
            resolved = recipe.resolve(job.hyperparameters, len(train))
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="hyperparameters") from None
        return Admission(
            message=(
                f"Files validated: {len(train)} training, {len(validation)} validation and "
                f"{len(test)} test examples; job queued"
            ),
            data={"train": len(train), "validation": len(validation), "test": len(test)},
            hyperparameters=resolved,
        )

    def run(self, context: JobContext) -> JobOutput:
        if context.job.options.get("resources"):
            # The only seam to the cluster package, imported when a job asks for it.
            from openmaas.scaleout.train_job import run_on_ray_train

            return run_on_ray_train(self, context)
        from openmaas.training.runner import run_training

        return run_training(self, context)

    # -- checks --------------------------------------------------------------------------------

    def recipe(self, name: str) -> Recipe:
        recipe = self.recipes.get(name)
        if recipe is None:
            known = ", ".join(sorted(self.recipes)) or "none"
            raise InvalidRequest(
                f"unknown recipe {name!r} (recipes: {known})", param="recipe", code="unknown_recipe"
            )
        return recipe

    def recipe_for_base(self, model: str, training_file: str, *, caller: Principal) -> str:
        """The recipe that fine-tunes the registered `model` for the file's task."""
        version = self._resolve_base(model, caller)
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

    def _resolve_base(self, reference: str, caller: Principal) -> Any:
        try:
            # As the caller resolves it: its own project's model of that name, else a public one.
            version = self.registry.resolve(reference, caller=caller)
        except (NotFound, InvalidRequest) as exc:
            known = ", ".join(sorted(self.recipes))
            raise InvalidRequest(
                f"model {reference!r} is neither a recipe ({known}) nor a model registered "
                f"here: {exc.message}",
                param="model",
                code="model_not_found",
            ) from None
        if not can_see(version.project, version.public, caller):
            raise InvalidRequest(
                f"model {reference!r} not found", param="model", code="model_not_found"
            )
        return version

    def _base_model(
        self, recipe: Recipe, reference: str | None, caller: Principal
    ) -> VersionPin | None:
        if reference is None:
            if recipe.needs_base_model:
                raise InvalidRequest(
                    f"recipe {recipe.name!r} fine-tunes a base model: name one", param="base_model"
                )
            return None
        if not (recipe.needs_base_model or recipe.accepts_base_model):
            raise InvalidRequest(
                f"recipe {recipe.name!r} trains from scratch and takes no base model",
                param="base_model",
            )
        version = self._resolve_base(reference, caller)
        # Pinned by row id and digest: should the name be deleted and registered again
        # (by another project, say) before the job runs, the run finds no base, never that.
        exact = qualified(version.project, version.model)
        return self.registry.store.pin(exact, version.version, caller=SYSTEM)

    def _embeddings(self, given: Mapping[str, Any], caller: Principal) -> VersionPin | None:
        """The word vectors hyperparameter `embeddings` names, pinned (`pin_word_vectors`)."""
        reference = given.get("embeddings")
        if not isinstance(reference, str) or reference == "auto":
            return None  # none asked for (the recipe checked the value's type)
        return pin_word_vectors(
            self.registry, reference, caller, param="hyperparameters.embeddings"
        )

    def _dataset(self, file_id: str, param: str, caller: Principal) -> DatasetRow:
        return ready_dataset(self.db, file_id, param, caller)

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
                    name = param_name(recipe, EARLY_STOPPING_PARAMS[option], "early_stopping")
                    given[name] = value
        if request.class_imbalance is not None:
            name = param_name(recipe, CLASS_IMBALANCE_PARAMS, "class_imbalance")
            given[name] = request.class_imbalance
        try:
            # Names and values now, before any quota is charged; "auto" values are resolved
            # again against the examples once they are read.
            recipe.resolve(given, max(1, n_examples))
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="hyperparameters") from None
        return given

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

    def _check_model_name(self, name: str, project: str, caller: Principal) -> None:
        check_publishable_name(self.registry, name, project, caller)


def _cross_validation(request: JobRequest) -> dict[str, Any]:
    """The job options of a k-fold cross-validation (none without one)."""
    k = request.cross_validation
    final = request.cross_validation_final
    if final not in CROSS_VALIDATION_FINALS:
        raise InvalidRequest(
            f"cross_validation_final must be all or best_fold, got {final!r}",
            param="cross_validation_final",
        )
    if k is None:
        return {}
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_FOLDS:
        raise InvalidRequest(
            f"cross_validation must be a number of folds from 2 to {MAX_FOLDS}, got {k!r}",
            param="cross_validation",
        )
    return {"cross_validation": k, "cross_validation_final": final}


def _default_task(recipe: Recipe, file_task: str | None) -> str:
    """The file's task, or the recipe's plain-text task when the file holds plain texts."""
    if file_task in PLAIN_TEXT_TASKS and file_task not in recipe.tasks:
        return next((task for task in recipe.tasks if task in PLAIN_TEXT_TASKS), file_task)
    return file_task or ""


def _holds_examples_for(file_task: str | None, task: str) -> bool:
    return file_task == task or (file_task in PLAIN_TEXT_TASKS and task in PLAIN_TEXT_TASKS)


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


def ready_dataset(db: Database, file_id: str, param: str, caller: Principal) -> DatasetRow:
    """The caller's file `file_id`, validated and holding examples; 400 naming `param`."""
    with db.transaction() as session:
        row = session.get(DatasetRow, file_id)
    if row is None or not (is_admin(caller) or row.project == caller.project):
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


def pin_word_vectors(
    registry: Registry, reference: str, caller: Principal, *, param: str
) -> VersionPin:
    """The word-vector model `reference` names, resolved as the caller resolves any model
    and pinned; 400 naming `param` unless it is a word-vector model the caller may use."""
    try:
        version = registry.resolve(reference, caller=caller)
    except (NotFound, InvalidRequest) as exc:
        raise InvalidRequest(
            f"embeddings {reference!r}: no word-vector model of that name is registered "
            f"here ({exc.message}); train one with the word2vec recipe or import a "
            "word2vec/GloVe text file",
            param=param,
            code="model_not_found",
        ) from None
    if not can_see(version.project, version.public, caller):
        raise InvalidRequest(
            f"embeddings {reference!r}: model not found", param=param, code="model_not_found"
        )
    if version.runtime != WORD_VECTORS_RUNTIME:
        raise InvalidRequest(
            f"embeddings {reference!r} is a {version.runtime} {version.task} model, not "
            f"word vectors (runtime {WORD_VECTORS_RUNTIME}: the word2vec recipe's output "
            "or an imported word2vec/GloVe text file)",
            param=param,
            code="wrong_model_type",
        )
    exact = qualified(version.project, version.model)
    return registry.store.pin(exact, version.version, caller=SYSTEM)
