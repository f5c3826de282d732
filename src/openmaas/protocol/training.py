"""Wire shapes of the training job APIs, shared by the server and the Python SDK.

`/v1/fine_tuning/jobs` speaks OpenAI's shapes exactly (`FineTuningJobOut`, ...), so the
stock `openai` client works; `/v1/training/jobs` takes and returns our richer ones
(`TrainingJobCreate`, `TrainingJobOut`).

Example::

    body = TrainingJobCreate(recipe="textcnn", training_file="file-1a2b", alias="staging")
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from openmaas.protocol.common import OmitsNone, Response

T = TypeVar("T")

SEED_MAX = 2**31 - 1

Auto = Literal["auto"]


class _Request(BaseModel):
    # Like OpenAI: fields this server does not know are ignored.
    model_config = ConfigDict(extra="ignore")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PageOut(Response, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


# -- OpenAI: /v1/fine_tuning/jobs ------------------------------------------------------------


def _count(value: Any) -> Auto | int | None:
    if value is None or value == "auto":
        return value  # type: ignore[no-any-return]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise ValueError(f"must be 'auto' or a whole number from 1, got {value!r}")
    return value


def _multiplier(value: Any) -> Auto | float | None:
    if value is None or value == "auto":
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        raise ValueError(f"must be 'auto' or a number above 0 (at most 100), got {value!r}")
    return float(value)


Count = Annotated[
    Auto | int | None, PlainValidator(_count, json_schema_input_type=Auto | int | None)
]
Multiplier = Annotated[
    Auto | float | None, PlainValidator(_multiplier, json_schema_input_type=Auto | float | None)
]


class OpenAIHyperparameters(_Request):
    """OpenAI's three, checked here; any other name passes through as one of the recipe's
    own (`n_layer` of `gpt`), which the recipe checks: an unknown name is a 400 naming it,
    not silently dropped."""

    model_config = ConfigDict(extra="allow")

    n_epochs: Count = None
    batch_size: Count = None
    learning_rate_multiplier: Multiplier = None

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class SupervisedMethodIn(_Request):
    hyperparameters: OpenAIHyperparameters | None = None


class MethodIn(_Request):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethodIn | None = None


class FineTuningJobCreate(_Request):
    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    hyperparameters: OpenAIHyperparameters | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    method: MethodIn | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None


class FineTuningErrorOut(Response):
    code: str
    message: str
    param: str | None = None


class FineTuningHyperparametersOut(Response):
    n_epochs: Auto | int = "auto"
    batch_size: Auto | int = "auto"
    learning_rate_multiplier: Auto | float = "auto"


class FineTuningJobOut(Response):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    model: str
    created_at: int
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    status: str
    validation_file: str | None = None
    training_file: str
    hyperparameters: FineTuningHyperparametersOut
    trained_tokens: int | None = None
    error: FineTuningErrorOut | None = None
    seed: int
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any] | None = None


class FineTuningEventOut(OmitsNone):
    """OpenAI's event; `data` (an object) only on events that carry some, never null."""

    omitted_when_none = frozenset({"data"})

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None = None


class FineTuningCheckpointOut(Response):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float]
    step_number: int


def event_cursor(event_id: int) -> str:
    return f"ftevent-{event_id}"


EVENT_CURSOR_PATTERN = r"^(ftevent-)?[0-9]{1,18}$"


def parse_event_cursor(value: str | None) -> int | None:
    """The numeric id of an `after` cursor (`ftevent-42`) checked by EVENT_CURSOR_PATTERN."""
    return int(value.removeprefix("ftevent-")) if value else None


# -- ours: /v1/training/jobs -----------------------------------------------------------------


class EarlyStoppingIn(_Strict):
    patience: int = Field(ge=1, le=1000, description="Evaluations without improvement.")
    min_delta: float = Field(default=0.0, ge=0, description="Smallest change that counts.")
    metric: str | None = Field(
        default=None, max_length=64, description="Validation metric to watch; recipe default."
    )


class SearchIn(_Strict):
    """A hyperparameter search: `space` maps recipe hyperparameters to ranges (the recipe's
    default space when left out), checked against the recipe (400 naming the parameter)."""

    space: dict[str, Any] | None = Field(
        default=None,
        description='{"name": {"type": "float"|"int"|"categorical", "low", "high", "log", '
        '"step" | "choices"}}; the recipe\'s default space when left out.',
    )
    metric: str | None = Field(
        default=None, max_length=64, description="A validation metric, e.g. val_macro_f1."
    )
    direction: Literal["maximize", "minimize"] | None = None
    n_trials: int = Field(default=20, ge=1, le=500)
    timeout_s: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, description="Seconds of trials, at most."
    )
    pruning: bool = Field(default=True, description="Median pruning on per-epoch metrics.")
    startup_trials: int = Field(default=5, ge=0, le=500, description="Never pruned.")
    warmup_epochs: int = Field(default=0, ge=0, le=10_000, description="Never pruned before.")


class ResourcesIn(_Strict):
    """Data-parallel training on a Ray cluster (OPENMAAS_RAY_ADDRESS): `num_workers` Ray
    Train workers, each with these CPUs and GPUs (docs/scaling-training.md)."""

    num_workers: int = Field(default=1, ge=1, le=256, description="Ray Train workers.")
    cpus_per_worker: float = Field(default=1.0, gt=0, le=1024, description="CPUs per worker.")
    gpus_per_worker: float = Field(default=0.0, ge=0, le=64, description="GPUs per worker.")


class TrainingJobCreate(_Strict):
    recipe: str = Field(min_length=1, max_length=64)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    task: str | None = Field(default=None, max_length=64)
    base_model: str | None = Field(default=None, max_length=256)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    early_stopping: EarlyStoppingIn | None = None
    class_imbalance: Literal["none", "weighted", "oversample"] | None = None
    validation_split: float = Field(default=0.1, ge=0, le=0.5)
    test_split: float = Field(default=0.1, gt=0, le=0.5)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    suffix: str | None = Field(default=None, max_length=64)
    model_name: str | None = Field(
        default=None, max_length=128, description="Register as this model's next version."
    )
    alias: str | None = Field(default=None, max_length=64, description="Moved on success.")
    search: SearchIn | None = Field(
        default=None, description="Search hyperparameters: a `search` job, its best trial kept."
    )
    cross_validation: int | None = Field(
        default=None, ge=2, le=20, description="k-fold cross-validation with this many folds."
    )
    cross_validation_final: Literal["all", "best_fold"] = Field(
        default="all", description="Register a model trained on all folds, or the best fold's."
    )
    resources: ResourcesIn | None = Field(
        default=None, description="Train on Ray Train workers (needs a Ray cluster)."
    )


class RecipeOut(Response):
    name: str
    tasks: list[str]
    needs_base_model: bool = False
    accepts_base_model: bool = False  # a base model is optional (needed: needs_base_model)
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, Any] = Field(default_factory=dict)


class ProgressOut(Response):
    step: int
    epoch: int
    total_steps: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    estimated_finish: datetime | None = None


class TrainingJobOut(Response):
    id: str
    object: Literal["training.job"] = "training.job"
    project: str
    created_by: str
    status: str
    recipe: str
    task: str
    base_model: str | None = None
    base_version: str | None = None
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any]
    seed: int
    suffix: str | None = None
    model_name: str
    alias: str | None = None
    fine_tuned_model: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    attempts: int = 0
    worker_id: str | None = None
    heartbeat_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: ProgressOut | None = None
    kind: str = "training"  # or "search"
    search: dict[str, Any] | None = None  # a search job's checked spec
    cross_validation: int | None = None
    cross_validation_final: str | None = None
    resources: dict[str, Any] | None = None  # the Ray Train workers asked for

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


class TrialOut(Response):
    """One trial of a search job."""

    number: int
    state: str  # running | complete | pruned | failed | waiting
    params: dict[str, Any] = Field(default_factory=dict)
    value: float | None = None  # the searched metric (best epoch; last reported when pruned)
    intermediate: dict[str, float] = Field(default_factory=dict)  # per epoch
    epochs: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)  # on the test split, when complete
    duration_s: float | None = None
    error: str | None = None
    worker: dict[str, Any] | None = None  # where it ran: Ray node id and pid (Ray Tune trials)


class TrainingEventOut(Response):
    id: int
    created_at: datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] | None = None


class TrainingCheckpointOut(Response):
    id: str
    job_id: str
    step: int
    epoch: int
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TrainingJobUpdate:
    """What following a job yields: its state now and the events since the last update."""

    job: TrainingJobOut
    events: list[TrainingEventOut]
