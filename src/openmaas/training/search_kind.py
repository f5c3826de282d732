"""Hyperparameter search as a job kind: trainings of one recipe with hyperparameters an
Optuna study proposes, the best registered as the job's model version.

A search job is a training job (the same request, files, checks and splits: `prepare` and
`check_inputs` are the training kind's) with a `search` option, checked here against the
recipe (`SearchSpec.parse`: 400 naming `search.space.<name>`); `run` is
`training.search_runner.run_search`.

Example::

    kind = SearchJobKind(training_kind)
    job = jobs.create("search", JobRequest(training_file="file-1a2b", recipe="textcnn",
                      search={"n_trials": 20}), caller=caller)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest
from openmaas.jobs.entities import SEARCH, Job, NewJob
from openmaas.jobs.kinds import Admission
from openmaas.training.requests import JobRequest
from openmaas.training.search_space import SearchSpec

if TYPE_CHECKING:
    from openmaas.jobs.context import JobContext
    from openmaas.jobs.publish import JobOutput
    from openmaas.training.kind import TrainingJobKind

# Where a search job keeps its checked spec.
SEARCH_OPTION = "search"


class SearchJobKind:
    """The `search` job kind, over the training kind's recipes, files and checks."""

    name = SEARCH
    failure_code = "search_failed"

    def __init__(self, training: TrainingJobKind) -> None:
        self.training = training

    def prepare(self, request: JobRequest, *, caller: Principal) -> NewJob:
        if request.search is None:
            raise InvalidRequest("a search job needs a search", param="search")
        if request.cross_validation is not None:
            raise InvalidRequest(
                "a search job cannot cross-validate (yet): leave out cross_validation",
                param="cross_validation",
            )
        if request.validation_split <= 0 and request.validation_file is None:
            raise InvalidRequest(
                "a search scores its trials on the validation split: give validation_split "
                "above 0 or a validation_file",
                param="validation_split",
            )
        prepared = self.training.prepare(request, caller=caller)
        recipe = self.training.recipe(prepared.recipe)
        rows = self.training.datasets_rows(prepared.training_file)
        spec = SearchSpec.parse(
            request.search, recipe, given=prepared.hyperparameters, n_examples=rows
        )
        return dataclasses.replace(
            prepared,
            kind=self.name,
            options={**prepared.options, SEARCH_OPTION: spec.to_dict()},
        )

    def checking_message(self, job: NewJob) -> str:
        return self.training.checking_message(job)

    def check_inputs(self, job: Job) -> Admission:
        return self.training.check_inputs(job)

    def run(self, context: JobContext) -> JobOutput:
        options = context.job.options
        # Trials need only the job's examples on a Ray worker: a base model's or word
        # vectors' files are not shipped there, so such searches stay on this worker.
        pinned = options.get("base_version") or options.get("embeddings_version_pin")
        if self.training.ray_address is not None and not pinned:
            from openmaas.scaleout.tune_search import run_search_on_tune

            return run_search_on_tune(self.training, context)
        from openmaas.training.search_runner import run_search

        return run_search(self.training, context)
