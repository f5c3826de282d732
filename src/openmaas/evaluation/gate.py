"""The alias evaluation gate: before an alias with a policy moves, the candidate and the
alias's current version are scored on the policy's file, one after the other, on the same
examples; the move goes ahead only when the candidate's metric is at least the current
one's plus `min_delta` (see `registry.policies`).

The server and the job worker set it on the registry (`registry.aliases.gate`); moves made
anywhere (the API, the CLI, a job's or a registration's `alias`, a traffic promotion) go
through `AliasService.move`, which calls it.

Example::

    registry.aliases.gate = AliasGate(registry, datasets, max_examples=10_000)
    registry.aliases.move("sentiment", "production", 3, caller=principal)  # 409 gate_failed
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from openmaas.auth.entities import SYSTEM
from openmaas.datasets.service import DatasetService
from openmaas.errors import GateFailed, InvalidRequest
from openmaas.evaluation.registered import DEFAULT_MAX_EXAMPLES, evaluate_pinned, load_examples
from openmaas.registry.composition import Registry
from openmaas.registry.policies import AliasPolicy

log = logging.getLogger(__name__)


class AliasGate:
    def __init__(
        self,
        registry: Registry,
        datasets: DatasetService,
        *,
        max_examples: int = DEFAULT_MAX_EXAMPLES,
        threads: int | None = None,
    ) -> None:
        self.registry = registry
        self.datasets = datasets
        self.max_examples = max_examples
        self.threads = threads

    def __call__(
        self, model: str, alias: str, current: int, candidate: int, policy: AliasPolicy
    ) -> Mapping[str, Any]:
        """The verdict on moving `alias` of `model` (`project/name`) from `current` to
        `candidate`: both scores; raises GateFailed (409) when the candidate loses."""
        # The server's own work: the policy's file was the setter's to read, checked then.
        pins = {n: self.registry.store.pin(model, n, caller=SYSTEM) for n in (candidate, current)}
        task = self.registry.store.get_version(model, candidate, caller=SYSTEM).task
        examples = load_examples(
            self.datasets,
            policy.eval_file,
            task,
            caller=SYSTEM,
            max_examples=self.max_examples,
            model=f"{model}:{candidate}",
        )
        scores: dict[int, float] = {}
        for number, pin in pins.items():
            report = evaluate_pinned(
                self.registry,
                self.datasets,
                pin,
                policy.eval_file,
                caller=SYSTEM,
                examples=examples,
                threads=self.threads,
            )
            if policy.metric not in report.metrics:
                raise InvalidRequest(
                    f"the gate's metric {policy.metric!r} is not in {model}:{number}'s report "
                    f"(it has {', '.join(sorted(report.metrics))}); set the policy again",
                    param="metric",
                )
            scores[number] = float(report.metrics[policy.metric])
        verdict = {
            "metric": policy.metric,
            "eval_file": policy.eval_file,
            "examples": len(examples),
            "min_delta": policy.min_delta,
            "current": {"version": current, "score": scores[current]},
            "candidate": {"version": candidate, "score": scores[candidate]},
        }
        name = model.split("/", 1)[-1]
        if scores[candidate] < scores[current] + policy.min_delta:
            raise GateFailed(
                f"gate of {name}@{alias}: candidate version {candidate} scores "
                f"{policy.metric}={scores[candidate]:.4f} and the current version {current} "
                f"scores {scores[current]:.4f} on {policy.eval_file} ({len(examples)} examples); "
                f"the candidate must score at least {scores[current] + policy.min_delta:.4f} "
                f"(min_delta {policy.min_delta:g}). An admin may force the move with a reason.",
                param="alias",
            )
        log.info("gate of %s@%s passed: %s", name, alias, verdict)
        return {**verdict, "passed": True}
