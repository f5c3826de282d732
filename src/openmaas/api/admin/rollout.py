"""Rollout routes of the registry: an alias's traffic split (`…/aliases/{alias}/traffic`;
`…/models/{name}/traffic` lists every split of a model) and its evaluation gate
(`…/aliases/{alias}/policy`; `…/models/{name}/policies` lists every gate of a model).

`PUT` starts or replaces the split, `GET` shows it with what each version did (requests,
errors, p50/p99, shadow agreement) on the server answering, `DELETE` ends it. Moving,
rolling back or deleting the alias ends it too (the registry does; the alias routes record
it). Every change is in the audit log with the split before and after.

`PUT …/policy` gates every later move of the alias on an evaluation (`registry.policies`,
`evaluation.gate`): the file must be the caller's to read, of the alias's model's task, and
the metric one the task's reports have where higher is better.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from openmaas.api.auditor import Auditor, AuditorDep
from openmaas.api.deps import EngineDep, PrincipalDep, RegistryDep, ServicesDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.params import ModelPath
from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest, NotFound
from openmaas.evaluation.registered import check_file
from openmaas.protocol.common import ListOut
from openmaas.protocol.rollout import (
    PolicyOut,
    PolicyRequest,
    TrafficOut,
    TrafficRequest,
    VersionStatsOut,
)
from openmaas.registry.composition import Registry
from openmaas.registry.policies import AliasPolicy, StoredPolicy
from openmaas.registry.traffic import RollbackPolicy, TrafficSpec, TrafficSplit
from openmaas.serving.engine import InferenceEngine

router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/v1/registry",
    tags=["registry"],
    dependencies=[Depends(caller)],
)


def _target(name: str, alias: str) -> str:
    return f"models/{name}/aliases/{alias}"


@router.put("/models/{name}/aliases/{alias}/traffic")
def set_traffic(
    name: ModelPath,
    alias: str,
    body: TrafficRequest,
    registry: RegistryDep,
    engine: EngineDep,
    who: PrincipalDep,
    auditor: AuditorDep,
) -> TrafficOut:
    """Split the alias's requests over versions by weight (see `TrafficRequest`)."""
    rollback = body.rollback
    spec = TrafficSpec(
        weights={int(version): weight for version, weight in body.versions.items()},
        sticky=body.sticky,
        shadow=body.shadow,
        shadow_share=body.shadow_share,
        rollback=RollbackPolicy(**rollback.model_dump()) if rollback else None,
    )
    before, after = registry.traffic.set(name, alias, spec, caller=who)
    auditor.record(
        "alias.traffic.set",
        _target(name, alias),
        before=before.to_dict() if before else None,
        after={**after.to_dict(), "reason": body.reason},
    )
    return traffic_out(after, engine)


@router.get("/models/{name}/traffic")
def list_traffic(
    name: ModelPath, registry: RegistryDep, engine: EngineDep, who: PrincipalDep
) -> ListOut[TrafficOut]:
    """Every active split of the model (one per split alias, by alias), with its figures."""
    splits = registry.traffic.of_model(name, caller=who)
    return ListOut(data=[traffic_out(split, engine) for split in splits])


@router.get("/models/{name}/aliases/{alias}/traffic")
def get_traffic(
    name: ModelPath, alias: str, registry: RegistryDep, engine: EngineDep, who: PrincipalDep
) -> TrafficOut:
    return traffic_out(registry.traffic.get(name, alias, caller=who), engine)


@router.delete("/models/{name}/aliases/{alias}/traffic")
def end_traffic(
    name: ModelPath,
    alias: str,
    registry: RegistryDep,
    engine: EngineDep,
    who: PrincipalDep,
    auditor: AuditorDep,
    reason: Annotated[str, Query(max_length=2_000)] = "",
) -> TrafficOut:
    """End the split: every request for the alias goes to its own version again."""
    ended = registry.traffic.end(name, alias, caller=who)
    auditor.record(
        "alias.traffic.end",
        _target(name, alias),
        before=ended.to_dict(),
        after={"baseline": ended.baseline, "reason": reason or "ended"},
    )
    return traffic_out(ended, engine)


def traffic_out(split: TrafficSplit, engine: InferenceEngine) -> TrafficOut:
    stats = engine.rollout.stats(split)
    return TrafficOut(
        model=split.model,
        alias=split.alias,
        baseline=split.baseline,
        versions={str(version): weight for version, weight in split.weights.items()},
        sticky=split.sticky,
        shadow=split.shadow,
        shadow_share=split.shadow_share,
        rollback=split.rollback.to_dict() if split.rollback else None,
        created_by=split.created_by,
        created_at=split.created_at,
        stats={
            str(version): VersionStatsOut(**figures.summary())
            for version, figures in sorted(stats.items())
        },
    )


def split_before(registry: Registry, name: str, alias: str, who: Principal) -> TrafficSplit | None:
    """The alias's split before a move that will end it (None: it has none)."""
    try:
        return registry.traffic.get(name, alias, caller=who)
    except NotFound:
        return None


def audit_split_ended(
    auditor: Auditor, name: str, alias: str, split: TrafficSplit | None, why: str
) -> None:
    if split is not None:
        auditor.record(
            "alias.traffic.end",
            _target(name, alias),
            before=split.to_dict(),
            after={"reason": why},
        )


# The metrics a gate may compare, per task: those where higher is better.
GATE_METRICS = {
    "text-classification": (
        "accuracy",
        "macro_f1",
        "micro_f1",
        "weighted_f1",
        "macro_precision",
        "macro_recall",
        "micro_precision",
        "micro_recall",
    ),
    "token-classification": ("entity_f1", "entity_precision", "entity_recall", "token_accuracy"),
}


@router.put("/models/{name}/aliases/{alias}/policy")
def set_policy(
    name: ModelPath,
    alias: str,
    body: PolicyRequest,
    registry: RegistryDep,
    services: ServicesDep,
    who: PrincipalDep,
    auditor: AuditorDep,
) -> PolicyOut:
    """Gate every later move of the alias on an evaluation of the candidate and the alias's
    current version on `eval_file` (refused with 409 `gate_failed` when it loses)."""
    version = registry.resolve(f"{name}@{alias}", caller=who)
    metrics = GATE_METRICS.get(version.task)
    if metrics is None:
        raise InvalidRequest(
            f"{version.model} is a {version.task} model; gates evaluate "
            f"{' and '.join(GATE_METRICS)} models",
            param="alias",
        )
    if body.metric not in metrics:
        raise InvalidRequest(
            f"metric {body.metric!r} is not one a {version.task} gate compares "
            f"(higher is better): {', '.join(metrics)}",
            param="metric",
        )
    check_file(
        services.datasets,
        body.eval_file,
        version.task,
        caller=who,
        max_examples=services.settings.max_eval_examples,
        model=f"{version.model}:{version.version}",
    )
    policy = AliasPolicy(body.eval_file, body.metric, body.min_delta)
    before, after = registry.aliases.policies.set(name, alias, policy, caller=who)
    auditor.record(
        "alias.policy.set",
        _target(name, alias),
        before=_policy_state(before) if before else None,
        after={**_policy_state(after), "reason": body.reason},
    )
    return policy_out(after)


@router.get("/models/{name}/policies")
def list_policies(name: ModelPath, registry: RegistryDep, who: PrincipalDep) -> ListOut[PolicyOut]:
    """Every evaluation gate of the model's aliases, by alias."""
    return ListOut(
        data=[policy_out(p) for p in registry.aliases.policies.of_model(name, caller=who)]
    )


@router.get("/models/{name}/aliases/{alias}/policy")
def get_policy(name: ModelPath, alias: str, registry: RegistryDep, who: PrincipalDep) -> PolicyOut:
    return policy_out(registry.aliases.policies.get(name, alias, caller=who))


@router.delete("/models/{name}/aliases/{alias}/policy")
def delete_policy(
    name: ModelPath,
    alias: str,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
    reason: Annotated[str, Query(max_length=2_000)] = "",
) -> PolicyOut:
    removed = registry.aliases.policies.delete(name, alias, caller=who)
    auditor.record(
        "alias.policy.delete",
        _target(name, alias),
        before=_policy_state(removed),
        after={"reason": reason},
    )
    return policy_out(removed)


def _policy_state(stored: StoredPolicy) -> dict[str, object]:
    policy = stored.policy
    return {"eval_file": policy.eval_file, "metric": policy.metric, "min_delta": policy.min_delta}


def policy_out(stored: StoredPolicy) -> PolicyOut:
    return PolicyOut(
        model=stored.model,
        alias=stored.alias,
        eval_file=stored.policy.eval_file,
        metric=stored.policy.metric,
        min_delta=stored.policy.min_delta,
        created_by=stored.created_by,
        created_at=stored.created_at,
    )
