"""What a kind of job supplies, and the set of kinds a process runs.

The queue, workers, supervisor, heartbeats, retries, cancel and publishing are shared; a
kind says what its requests mean and how its work runs:

- `prepare(request, caller=...)`: every check that needs no input contents (validate,
  resolve and pin inputs such as a base model version), before the caller is charged;
- `check_inputs(job)`: read the inputs once the job is recorded and resolve what depends on
  them; an `OpenMaaSError` fails the job (a 4xx one is the caller's to fix);
- `run(context)`: the work itself, reporting events and checkpoints through the context and
  raising `JobStopped` when `context.should_stop()` said so; returns what to publish (a
  `JobOutput`, registered as a model version) or a `JobResult` (nothing to register).

Example::

    kinds = JobKinds([TrainingJobKind(registry=registry, datasets=datasets, recipes=recipes)])
    kinds.get("training").prepare(request, caller=principal)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest
from openmaas.jobs.entities import Job, NewJob

if TYPE_CHECKING:
    from openmaas.jobs.context import JobContext
    from openmaas.jobs.publish import JobOutput, JobResult


@dataclass(frozen=True, slots=True)
class Admission:
    """A job's inputs passed: the event that says so, and the hyperparameters resolved
    against them (None: keep those recorded)."""

    message: str
    data: Mapping[str, Any] = field(default_factory=dict)
    hyperparameters: Mapping[str, Any] | None = None


class JobKind(Protocol):
    name: str  # recorded on every job of this kind
    failure_code: str  # the error code of a job whose `run` raised

    def prepare(self, request: Any, *, caller: Principal) -> NewJob: ...

    def checking_message(self, job: NewJob) -> str: ...

    def check_inputs(self, job: Job) -> Admission: ...

    def run(self, context: JobContext) -> JobOutput | JobResult: ...


class JobKinds:
    """The kinds one process knows, by name; an unknown name is the caller's mistake."""

    def __init__(self, kinds: Iterable[JobKind]) -> None:
        self._kinds = {kind.name: kind for kind in kinds}

    def get(self, name: str) -> JobKind:
        kind = self._kinds.get(name)
        if kind is None:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise InvalidRequest(
                f"unknown job kind {name!r} (kinds: {known})", param="kind", code="unknown_kind"
            )
        return kind

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._kinds)

    def __iter__(self) -> Iterator[JobKind]:
        return iter(self._kinds.values())
