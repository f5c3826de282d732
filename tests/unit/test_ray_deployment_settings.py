"""OPENMAAS_RAY_DEPLOYMENTS: per-model entries over `*` over the defaults, Serve's
autoscaling config from them, and bad entries refused with the entry and field named."""

from __future__ import annotations

import pytest

from openmaas.errors import InvalidRequest
from openmaas.scaleout.serve_settings import DeploymentTable, ReplicaSettings


def test_a_model_entry_takes_what_it_leaves_out_from_the_default_entry() -> None:
    table = DeploymentTable.parse(
        {"*": {"num_cpus": 0.25, "max_replicas": 3}, "bert": {"min_replicas": 0, "idle_s": 2}}
    )
    bert = table.for_model("acme/bert")
    assert (bert.num_cpus, bert.max_replicas, bert.min_replicas) == (0.25, 3, 0)
    assert table.for_model("acme/other") == ReplicaSettings(num_cpus=0.25, max_replicas=3)
    exact = DeploymentTable.parse({"acme/bert": {"max_replicas": 5}, "bert": {"max_replicas": 2}})
    assert exact.for_model("acme/bert").max_replicas == 5
    assert exact.for_model("other/bert").max_replicas == 2
    assert DeploymentTable.parse({}).for_model("x/y") == ReplicaSettings()


def test_autoscaling_scales_to_zero_after_the_idle_window() -> None:
    config = ReplicaSettings(min_replicas=0, max_replicas=2, idle_s=2).autoscaling()
    assert config["min_replicas"] == 0
    assert config["initial_replicas"] == 0
    assert config["downscale_to_zero_delay_s"] == 2
    assert config["look_back_period_s"] == 2


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"bert": {"max_replicas": 1, "min_replicas": 2}}, "'bert'"),
        ({"*": {"num_cpus": -1}}, "num_cpus"),
        ({"bert": {"replicas": 2}}, "replicas"),
    ],
)
def test_bad_entries_are_refused_by_name(raw: dict[str, dict[str, object]], named: str) -> None:
    with pytest.raises(InvalidRequest, match="OPENMAAS_RAY_DEPLOYMENTS") as refused:
        DeploymentTable.parse(raw)
    assert named in refused.value.message


def test_a_replica_error_crosses_back_as_the_same_error() -> None:
    import pickle
    import warnings

    from openmaas.errors import ModelUnloaded, Overloaded

    with warnings.catch_warnings():  # Ray's own pydantic v1-style fields, on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from openmaas.scaleout.serve_replica import RemoteError

    for raised in (
        ModelUnloaded("model 'bert:1' is unloaded", reference="bert:1"),  # a required kwarg
        Overloaded("queue full", retry_after_seconds=3),
        InvalidRequest("input: too long", param="input"),
    ):
        rebuilt = pickle.loads(pickle.dumps(RemoteError.of(raised))).rebuild()
        assert type(rebuilt) is type(raised)
        assert rebuilt.to_dict() == raised.to_dict()
        assert (rebuilt.headers, rebuilt.status_code) == (raised.headers, raised.status_code)
        assert vars(rebuilt) == vars(raised)
