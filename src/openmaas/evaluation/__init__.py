"""Evaluation: a registered model scored on a labelled file, as a library call and as the
`evaluation` job kind (`POST /v1/evaluations`).

Synchronous API, for code that needs a report now (alias evaluation gates):

- `evaluate_reference(registry, datasets, reference, file_id, *, caller, max_examples=10_000,
  threads=None) -> EvaluationReport`: resolve `reference` as `caller` does (`name`,
  `name:3`, `name@alias`), check the file (visible to `caller`, validated, of the model's
  task, at most `max_examples`), open the version, load it with its serving runtime
  (`get_runtime(version.runtime).load(ModelSource.from_version(...), LoadOptions(device="cpu"))`),
  score it, unload it. Refusals are `InvalidRequest` (400) naming `model` or `file`.
- `evaluate_pinned(registry, datasets, pin, file_id, *, caller, ...) -> EvaluationReport`: the
  same for exactly one pinned version (`registry.store.pin`, `pin_version`).
- `score(model, task, examples) -> EvaluationReport`: a `LoadedModel` already loaded, on
  examples already read (`{"text", "label"}` or `{"tokens", "tags"}` dicts).
- `EvaluationReport.metrics`: flat names. Text classification: `accuracy`,
  `macro_precision`, `macro_recall`, `macro_f1`, `micro_precision`, `micro_recall`,
  `micro_f1`, `weighted_f1`, `ece`. Token classification: `entity_precision`,
  `entity_recall`, `entity_f1`, `token_accuracy`. Besides them: `per_class`,
  `confusion_matrix`, `calibration` and `worst_examples`; `deltas(a, b)` compares two.
- `EVALUATED_TASKS`: the tasks that can be evaluated (text and token classification).

Example::

    from openmaas.evaluation import evaluate_reference

    report = evaluate_reference(registry, datasets, "sentiment@candidate", "file-1a2b",
                                caller=caller)
    if report.metrics["macro_f1"] < 0.85:
        raise InvalidRequest(f"{report.model} scores macro F1 {report.metrics['macro_f1']:.3f}")
"""

from openmaas.evaluation.registered import (
    DEFAULT_MAX_EXAMPLES,
    check_file,
    evaluate_pinned,
    evaluate_reference,
    load_examples,
    pin_version,
    resolve_version,
)
from openmaas.evaluation.report import EvaluationReport, deltas
from openmaas.evaluation.scoring import EVALUATED_TASKS, score

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "EVALUATED_TASKS",
    "EvaluationReport",
    "check_file",
    "deltas",
    "evaluate_pinned",
    "evaluate_reference",
    "load_examples",
    "pin_version",
    "resolve_version",
    "score",
]
