"""Optimization as a job kind: a registered model exported to ONNX or quantized to int8,
registered as a new version with lineage and the deltas measured against its parent.

`prepare` resolves and pins the parent, checks that the method applies to it (a 400 naming
the methods that do) and resolves the method's settings; there are no input files, so
`check_inputs` only queues the job; `run` (`optimize.runner`) does the work on a worker.

Example::

    kind = OptimizationJobKind(registry=registry)
    jobs = JobService(db, kinds=[training, kind])
    job = jobs.create("optimization", OptimizationRequest("all-minilm-l6-v2", "quantize"),
                      caller=caller)
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from openmaas.auth.access import can_see, is_admin
from openmaas.auth.entities import SYSTEM, Principal
from openmaas.errors import InvalidRequest, NotFound
from openmaas.jobs.context import CREATED_BY_ADMIN
from openmaas.jobs.entities import Job, NewJob
from openmaas.jobs.kinds import Admission
from openmaas.jobs.publish import VARIANT_OF, check_publishable_name
from openmaas.optimize.methods import Method
from openmaas.optimize.registry import get_method, not_applicable_message
from openmaas.optimize.requests import OptimizationRequest
from openmaas.registry.composition import Registry
from openmaas.registry.entities import ModelVersion
from openmaas.registry.names import check_alias, qualified
from openmaas.store.database import Database
from openmaas.training.kind import pin_word_vectors
from openmaas.training.requests import DatasetSource

if TYPE_CHECKING:
    from openmaas.jobs.context import JobContext
    from openmaas.jobs.publish import JobOutput

OPTIMIZATION = "optimization"
MAX_MODEL_NAME_CHARS = 128


def new_job_id() -> str:
    return f"optjob-{secrets.token_hex(12)}"


class OptimizationJobKind:
    """The `optimization` job kind (see the module's docstring)."""

    name = OPTIMIZATION
    failure_code = "optimization_failed"

    def __init__(
        self,
        *,
        registry: Registry,
        db: Database | None = None,
        datasets: DatasetSource | None = None,
    ) -> None:
        self.registry = registry
        self.db = db  # for the job's files; without it a request naming files is refused
        self.datasets = datasets

    def prepare(self, request: OptimizationRequest, *, caller: Principal) -> NewJob:
        method = get_method(request.method)
        parent = self._parent(request.model, caller)
        if not method.applies_to(parent):
            raise InvalidRequest(
                not_applicable_message(method, parent),
                param="method",
                code="method_not_applicable",
            )
        settings = method.check(request.settings)
        vectors = settings.get("embeddings")
        vectors_pin = (
            pin_word_vectors(self.registry, vectors, caller, param="settings.embeddings")
            if isinstance(vectors, str)
            else None
        )
        if method.check_parent is not None:
            exact = f"{qualified(parent.project, parent.model)}:{parent.version}"
            with self.registry.open_files(exact, caller=SYSTEM, verify=False) as opened:
                method.check_parent(settings, opened)
        training_file = self._file(request.training_file, "training_file", parent, caller)
        eval_file = self._file(request.eval_file, "eval_file", parent, caller)
        if method.learns_from_file(settings) and training_file is None:
            raise InvalidRequest(
                f"method {method.name!r} learns from a file: name one as training_file",
                param="training_file",
            )
        if method.needs_examples(settings) and training_file is None and eval_file is None:
            raise InvalidRequest(
                f"method {method.name!r} with these settings reads example texts: name a file "
                "of the model's task as training_file (or eval_file)",
                param="training_file",
            )
        model_name = request.model_name or _derived_name(parent.model, method)
        check_publishable_name(self.registry, model_name, caller.project, caller)
        if request.alias is not None:
            check_alias(request.alias)
        # Pinned by row id and digest: a parent deleted (and its name registered again)
        # before the job runs fails the job; it never optimizes another model.
        exact = qualified(parent.project, parent.model)
        pin = self.registry.store.pin(exact, parent.version, caller=SYSTEM)
        reference = f"{parent.model}:{parent.version}"
        return NewJob(
            id=new_job_id(),
            kind=OPTIMIZATION,
            project=caller.project,
            key_id=caller.key_id or None,
            created_by=caller.actor,
            recipe=request.method,
            task=parent.task,
            base_model=request.model,
            training_file=training_file or "",
            validation_file=eval_file,
            hyperparameters=settings,
            options={
                "method": request.method,
                "base_version": reference,
                "base_version_pin": pin.to_dict(),
                "embeddings_version_pin": vectors_pin.to_dict() if vectors_pin else None,
                "parent_runtime": parent.runtime,
                CREATED_BY_ADMIN: is_admin(caller),
                "explicit_model_name": request.model_name is not None,
            },
            suffix=None,
            seed=0,
            model_name=model_name,
            alias=request.alias,
        )

    def prepare_variant(self, version: ModelVersion, method_name: str, *, actor: str) -> NewJob:
        """A job the server itself creates in `version`'s project: `method_name` with its
        default settings over exactly that version, its output stored as the version's
        variant (`jobs.publish.VARIANT_OF`), not registered as a version. No caller, so no
        name, alias or file to check; the caller's quota is not charged (`AutoOnnx`)."""
        method = get_method(method_name)
        exact = qualified(version.project, version.model)
        pin = self.registry.store.pin(exact, version.version, caller=SYSTEM)
        reference = f"{version.model}:{version.version}"
        return NewJob(
            id=new_job_id(),
            kind=OPTIMIZATION,
            project=version.project,
            key_id=None,
            created_by=actor,
            recipe=method.name,
            task=version.task,
            base_model=reference,
            training_file="",
            validation_file=None,
            hyperparameters=method.check({}),
            options={
                "method": method.name,
                "base_version": reference,
                "base_version_pin": pin.to_dict(),
                "parent_runtime": version.runtime,
                CREATED_BY_ADMIN: False,  # it reads the version as its project's keys would
                "explicit_model_name": True,
                VARIANT_OF: pin.to_dict(),
            },
            suffix=None,
            seed=0,
            model_name=version.model,
            alias=None,
        )

    def checking_message(self, job: NewJob) -> str:
        return f"Checking model {job.options.get('base_version')}"

    def check_inputs(self, job: Job) -> Admission:
        return Admission(
            message=f"Job queued: {job.recipe} of {job.options.get('base_version')}",
            data={"method": job.recipe, "parent": job.options.get("base_version")},
        )

    def run(self, context: JobContext) -> JobOutput:
        from openmaas.optimize.runner import run_optimization

        return run_optimization(self, context)

    def _file(
        self, file_id: str | None, param: str, parent: ModelVersion, caller: Principal
    ) -> str | None:
        """A file the job reads: the caller's, validated, with examples of the model's task."""
        if file_id is None:
            return None
        if self.db is None:
            raise InvalidRequest(f"this server takes no {param} for optimization", param=param)
        from openmaas.training.kind import ready_dataset

        row = ready_dataset(self.db, file_id, param, caller)
        # An embedding model is measured on any file's texts (cosine to the parent's vectors).
        texts_will_do = parent.task == "embedding" and param == "eval_file"
        if row.task != parent.task and not texts_will_do:
            raise InvalidRequest(
                f"file {file_id} holds {row.task} examples; {parent.model}:{parent.version} "
                f"is a {parent.task} model",
                param=param,
                code="invalid_file",
            )
        return file_id

    def _parent(self, reference: str, caller: Principal) -> ModelVersion:
        try:
            # As the caller resolves it: its own project's model of that name, else a public one.
            version = self.registry.resolve(reference, caller=caller)
        except (NotFound, InvalidRequest) as exc:
            raise InvalidRequest(
                f"model {reference!r}: {exc.message}", param="model", code="model_not_found"
            ) from None
        if not can_see(version.project, version.public, caller):
            raise InvalidRequest(
                f"model {reference!r} not found", param="model", code="model_not_found"
            )
        return version


def _derived_name(parent: str, method: Method) -> str:
    suffix = f"-{method.suffix}"
    return parent[: MAX_MODEL_NAME_CHARS - len(suffix)] + suffix
