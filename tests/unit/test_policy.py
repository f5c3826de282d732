"""LimitPolicy: validation of the stored/admin JSON, and the key-over-project override."""

from __future__ import annotations

import pytest

from openmaas.auth.policy import MAX_LIMIT, LimitPolicy
from openmaas.errors import InvalidRequest


def test_round_trips_through_json_keeping_only_set_fields() -> None:
    data = {"requests_per_minute": 60, "tokens_per_day": 100_000, "training_jobs_per_day": 0}
    policy = LimitPolicy.from_json(data)
    assert policy == LimitPolicy(
        requests_per_minute=60, tokens_per_day=100_000, training_jobs_per_day=0
    )
    assert policy.to_json() == data
    assert LimitPolicy.from_json(policy.to_json()) == policy


def test_empty_and_null_mean_unlimited() -> None:
    assert LimitPolicy.from_json({}) == LimitPolicy()
    cleared = LimitPolicy.from_json({"tokens_per_month": None, "requests_per_minute": 5})
    assert cleared == LimitPolicy(requests_per_minute=5)
    assert cleared.to_json() == {"requests_per_minute": 5}
    assert LimitPolicy().is_unlimited
    assert not cleared.is_unlimited


def test_unknown_field_is_refused_naming_it_and_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as caught:
        LimitPolicy.from_json({"requests_per_second": 5})
    assert caught.value.param == "limits.requests_per_second"
    assert "'requests_per_second'" in caught.value.message
    assert "requests_per_minute" in caught.value.message
    assert caught.value.status_code == 400


@pytest.mark.parametrize("value", [-1, 1.5, 100.0, "100", True, [1], MAX_LIMIT + 1])
def test_a_value_that_is_not_a_count_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        LimitPolicy.from_json({"tokens_per_day": value})
    assert caught.value.param == "limits.tokens_per_day"
    assert "'tokens_per_day' must be a whole number from 0" in caught.value.message
    assert "null for no limit" in caught.value.message


@pytest.mark.parametrize("data", [[], "60", 60, None])
def test_limits_must_be_an_object(data: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        LimitPolicy.from_json(data)
    assert caught.value.param == "limits"


def test_a_keys_set_fields_override_the_projects() -> None:
    project = LimitPolicy(requests_per_minute=600, tokens_per_day=1_000_000)
    key = LimitPolicy(requests_per_minute=60, training_jobs_per_day=1)
    assert project.overridden_by(key) == LimitPolicy(
        requests_per_minute=60, tokens_per_day=1_000_000, training_jobs_per_day=1
    )
    assert project.overridden_by(LimitPolicy()) == project
    # Zero is a limit (nothing allowed), not "unset".
    assert project.overridden_by(LimitPolicy(tokens_per_day=0)).tokens_per_day == 0
