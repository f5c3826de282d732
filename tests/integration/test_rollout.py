"""Rolling out against a real server over HTTP (issue 14): traffic splits on an alias by
weight and sticky by header, on /v1 and /v2, the version that answered in
`OpenMaaS-Model-Version`, shadow traffic compared and never returned, per-version figures in
`GET …/traffic` and `/metrics`, a failing canary rolled back by itself with the audit log
saying why, a promotion (moving the alias) ending the split, and evaluation gates that
refuse a worse candidate (API, registration, job) and accept a better one.

The versions are tiny BERT classifiers whose classifier layer is zeroed but for a bias: each
version answers one label for every text (`forced_label`), so an answer tells which version
computed it as well as the header does.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openmaas import APIError, Client
from tests.integration.conftest import (
    RunningServer,
    assert_api_error,
    start_server,
    stop_server,
)
from tests.integration.job_servers import blocks, run_script
from tests.runtimes.tiny_models import build_bert

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "rollout.md"
LABELS = ("negative", "positive")
VERSION_HEADER = "OpenMaaS-Model-Version"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("rollout") / "home",
        # The split is read again at once after a change through this server; a short TTL
        # only matters across servers.
        {
            "OPENMAAS_RESOLVE_TTL_S": "1",
            # Jobs whose `alias` is gated (optimization jobs here).
            "OPENMAAS_WORKERS": "1",
            "OPENMAAS_TRAINING_THREADS": "1",
        },
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


def _classifier(directory: Path, label: str) -> Path:
    return build_bert(directory, head="sequence-classification", labels=LABELS, forced_label=label)


def _versions(sdk: Client, tmp: Path, name: str, labels: list[str]) -> None:
    for i, label in enumerate(labels, start=1):
        version = sdk.upload(name, _classifier(tmp / f"{name}-{i}", label))
        assert version.version == i
    sdk.set_alias(name, "production", 1)


def classify(
    server: RunningServer, model: str, headers: dict[str, str] | None = None
) -> tuple[str, str]:
    """(the version that answered, the label it gave)."""
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers={**server.headers, **(headers or {})},
        json={"model": model, "input": "a text"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.headers[VERSION_HEADER], answer.json()["data"][0]["labels"][0]["label"]


def test_a_90_10_split_sends_about_a_tenth_of_requests_to_the_candidate(
    server: RunningServer, sdk: Client, tmp_path: Path
) -> None:
    _versions(sdk, tmp_path, "split", ["negative", "positive"])
    split = sdk.set_traffic("split", "production", {1: 90, 2: 10}, reason="canary 10%")
    assert (split.baseline, split.versions) == (1, {"1": 90, "2": 10})
    answered = Counter()
    with httpx.Client(headers=server.headers, timeout=60) as http:
        for _ in range(1000):
            answer = http.post(
                f"{server.url}/v1/classify", json={"model": "split", "input": "a text"}
            )
            assert answer.status_code == 200, answer.text
            version = answer.headers[VERSION_HEADER]
            label = answer.json()["data"][0]["labels"][0]["label"]
            # The header names the version whose answer came back.
            assert label == {"split:1": "negative", "split:2": "positive"}[version]
            answered[version] += 1
    share = answered["split:2"] / 1000
    assert 0.06 <= share <= 0.14, answered  # 10% within ±4 points
    # `name@production` is split too; `name:1` is exact.
    assert {classify(server, "split:1")[0] for _ in range(20)} == {"split:1"}
    seen = {classify(server, "split@production")[0] for _ in range(100)}
    assert seen == {"split:1", "split:2"}
    stats = sdk.traffic("split", "production").stats
    assert stats["1"].requests + stats["2"].requests >= 1100
    assert stats["2"].errors == 0
    assert stats["2"].p99_ms is not None
    metrics = httpx.get(f"{server.url}/metrics", headers=server.headers, timeout=30).text
    assert 'openmaas_version_requests_total{model="split",outcome="ok",version="2"}' in metrics


def test_the_v2_routes_follow_the_split(server: RunningServer, sdk: Client) -> None:
    sdk.set_traffic("split", "production", {1: 50, 2: 50})
    seen = Counter()
    for _ in range(60):
        answer = httpx.post(
            f"{server.url}/v2/models/split/infer",
            headers=server.headers,
            json={"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        seen[answer.headers[VERSION_HEADER]] += 1
        # One request, one choice: the version in the body is the one in the header.
        assert f"split:{answer.json()['model_version']}" == answer.headers[VERSION_HEADER]
    assert set(seen) == {"split:1", "split:2"}


def test_a_sticky_split_keeps_each_user_on_one_version(server: RunningServer, sdk: Client) -> None:
    sdk.set_traffic("split", "production", {1: 50, 2: 50}, sticky="x-user-id")
    per_user: dict[str, set[str]] = {}
    for user in range(24):
        for _ in range(5):
            version, _ = classify(server, "split", {"x-user-id": f"user-{user}"})
            per_user.setdefault(f"user-{user}", set()).add(version)
    assert all(len(versions) == 1 for versions in per_user.values()), per_user
    # Users are spread over both versions.
    assert set().union(*per_user.values()) == {"split:1", "split:2"}


def test_a_models_splits_are_listed_with_their_figures(
    server: RunningServer, sdk: Client, tmp_path: Path
) -> None:
    _versions(sdk, tmp_path, "listed", ["negative", "positive", "positive"])
    assert sdk.traffic_splits("listed") == []  # no split yet: an empty list, not a 404
    assert sdk.policies("listed") == []  # nor a gate
    sdk.set_alias("listed", "staging", 2)
    sdk.set_traffic("listed", "staging", {2: 50, 3: 50}, sticky="x-user-id")
    sdk.set_traffic("listed", "production", {1: 90, 2: 10}, shadow=3, shadow_share=0.5)
    for _ in range(20):
        classify(server, "listed@staging")
    splits = sdk.traffic_splits("listed")
    assert [(s.alias, s.baseline, s.versions) for s in splits] == [
        ("production", 1, {"1": 90, "2": 10}),
        ("staging", 2, {"2": 50, "3": 50}),
    ]
    production, staging = splits
    assert (production.shadow, production.shadow_share, staging.sticky) == (3, 0.5, "x-user-id")
    assert sum(figures.requests for figures in staging.stats.values()) == 20
    assert production.stats == {}  # nothing asked for listed@production yet
    # Another project's key sees no model of that name.
    other = httpx.post(
        f"{server.url}/v1/projects", json={"name": "listers"}, headers=server.headers, timeout=30
    )
    assert other.status_code == 201, other.text
    key = httpx.post(
        f"{server.url}/v1/keys",
        json={"name": "lister", "project": "listers", "scopes": ["models:read"]},
        headers=server.headers,
        timeout=30,
    ).json()["key"]
    hidden = httpx.get(
        f"{server.url}/v1/registry/models/listed/traffic",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert hidden.status_code == 404, hidden.text
    sdk.end_traffic("listed", "staging")
    assert [s.alias for s in sdk.traffic_splits("listed")] == ["production"]


def test_promoting_ends_the_split_and_the_audit_says_so(server: RunningServer, sdk: Client) -> None:
    sdk.set_traffic("split", "production", {1: 50, 2: 50})
    sdk.set_alias("split", "production", 2, reason="the canary held")
    assert {classify(server, "split")[0] for _ in range(30)} == {"split:2"}
    with pytest.raises(APIError) as gone:
        sdk.traffic("split", "production")
    assert_api_error(gone, 404, "no_traffic_split")
    events = sdk.audit(action="alias.traffic.end", target="models/split").data
    assert events[-1].after == {"reason": "alias moved to 2"}
    assert events[-1].before is not None
    assert events[-1].before["versions"] == {"1": 50, "2": 50}


def test_a_failing_canary_is_rolled_back_by_itself(
    server: RunningServer, sdk: Client, tmp_path: Path
) -> None:
    _versions(sdk, tmp_path, "canary", ["negative"])
    # Version 2 cannot load: its config says 48 wide, its weights are 32 wide.
    broken = _classifier(tmp_path / "broken", "positive")
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "hidden_size": 48}))
    assert sdk.upload("canary", broken).version == 2
    sdk.set_traffic(
        "canary",
        "production",
        {1: 50, 2: 50},
        rollback={"max_error_rate_delta": 0.02, "min_requests": 10},
    )
    failures = 0
    for _ in range(80):
        answer = httpx.post(
            f"{server.url}/v1/classify",
            headers=server.headers,
            json={"model": "canary", "input": "a text"},
            timeout=60,
        )
        failures += answer.status_code >= 500
    # Taken out after its 10th failure: the rest went to the baseline.
    assert 10 <= failures <= 12
    assert {classify(server, "canary")[0] for _ in range(30)} == {"canary:1"}
    assert sdk.aliases("canary") == {"production": 1}
    with pytest.raises(APIError) as ended:
        sdk.traffic("canary", "production")
    assert_api_error(ended, 404, "no_traffic_split")
    [event] = sdk.audit(action="alias.traffic.rollback", target="models/canary").data
    assert event.actor == "system:rollout"
    assert event.after is not None
    assert "error rate 100.00% exceeds the baseline's 0.00%" in event.after["reason"]
    assert event.after["figures"]["candidate_requests"] >= 10
    assert event.after["figures"]["candidate"] == 2


def test_shadow_traffic_is_compared_and_never_returned(
    server: RunningServer, sdk: Client, tmp_path: Path
) -> None:
    # 1 and 3 answer alike; 2 never takes live traffic (weight 0).
    _versions(sdk, tmp_path, "shadowed", ["negative", "positive", "negative"])
    sdk.set_traffic("shadowed", "production", {1: 100, 2: 0}, shadow=3)
    for _ in range(40):
        assert classify(server, "shadowed") == ("shadowed:1", "negative")

    def compared() -> int:
        stats = sdk.traffic("shadowed", "production").stats.get("3")
        return stats.shadow_requests or 0 if stats else 0

    from tests.integration.waiting import wait_for

    wait_for("40 shadow comparisons", lambda: compared() >= 40 or None, 60)
    shadow = sdk.traffic("shadowed", "production").stats["3"]
    assert shadow.shadow_agreement == 1.0
    assert shadow.shadow_errors == 0
    assert shadow.requests == 0  # it answered no live request
    # A shadow that disagrees shows it.
    sdk.set_traffic("shadowed", "production", {1: 100, 3: 0}, shadow=2)
    for _ in range(20):
        classify(server, "shadowed")
    wait_for(
        "20 disagreeing comparisons",
        lambda: sdk.traffic("shadowed", "production").stats.get("2") or None,
        60,
    )
    wait_for(
        "all 20 compared",
        lambda: (
            (sdk.traffic("shadowed", "production").stats["2"].shadow_requests or 0) >= 20 or None
        ),
        60,
    )
    assert sdk.traffic("shadowed", "production").stats["2"].shadow_agreement == 0.0
    metrics = httpx.get(f"{server.url}/metrics", headers=server.headers, timeout=30).text
    assert 'openmaas_shadow_items_total{model="shadowed",version="3"} 40.0' in metrics


def test_bad_splits_name_the_setting(server: RunningServer, sdk: Client) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"versions": {"1": 50, "9": 50}}, "versions"),
        ({"versions": {"2": 50, "3": 50}}, "versions"),  # no baseline (production is 1)
        ({"versions": {"1": 100}}, "versions"),
        ({"versions": {"1": 0, "2": 0}}, "versions"),
        ({"versions": {"1": 90, "2": 10}, "sticky": "Authorization"}, "sticky"),
        ({"versions": {"1": 90, "2": 10}, "shadow": 2}, "shadow"),
        (
            {"versions": {"1": 90, "2": 10}, "rollback": {"min_requests": 5}},
            "rollback",
        ),
    ]
    sdk.set_alias("shadowed", "production", 1)
    for body, param in cases:
        answer = httpx.put(
            f"{server.url}/v1/registry/models/shadowed/aliases/production/traffic",
            headers=server.headers,
            json=body,
            timeout=30,
        )
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["param"].startswith(param), (body, answer.text)
    answer = httpx.put(
        f"{server.url}/v1/registry/models/shadowed/aliases/production/traffic",
        headers=server.headers,
        json={"versions": {"1": 90, "2": -1}},
        timeout=30,
    )
    assert answer.status_code == 400


# -- evaluation gates ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mostly_positive(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A labelled file on which the `positive` version scores 0.7 and `negative` 0.3."""
    path = tmp_path_factory.mktemp("gate") / "eval.jsonl"
    rows = [{"text": f"review number {i}", "label": LABELS[i % 10 < 7]} for i in range(40)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = sdk.upload_dataset(path)
    assert (dataset.status, dataset.task) == ("processed", "text-classification")
    return dataset.id


def test_a_gate_refuses_a_worse_candidate_and_accepts_a_better_one(
    server: RunningServer, sdk: Client, tmp_path: Path, mostly_positive: str
) -> None:
    _versions(sdk, tmp_path, "gated", ["negative", "positive", "negative"])
    policy = sdk.set_policy("gated", "production", mostly_positive, metric="accuracy")
    assert (policy.metric, policy.min_delta) == ("accuracy", 0.0)
    listed = [(p.alias, p.metric, p.eval_file) for p in sdk.policies("gated")]
    assert listed == [("production", "accuracy", mostly_positive)]
    better = sdk.set_alias("gated", "production", 2, reason="scores higher")
    assert better.event is not None
    assert better.event.gate is not None
    assert better.event.gate["candidate"] == {"version": 2, "score": 0.7}
    assert better.event.gate["current"] == {"version": 1, "score": 0.3}
    with pytest.raises(APIError) as refused:
        sdk.set_alias("gated", "production", 3)
    assert_api_error(refused, 409, "gate_failed")
    assert "candidate version 3 scores accuracy=0.3000" in refused.value.message
    assert "the current version 2 scores 0.7000" in refused.value.message
    assert sdk.aliases("gated")["production"] == 2
    # The refusal holds for a registration that names the alias: the version is kept.
    with pytest.raises(APIError) as registered:
        sdk.upload("gated", _classifier(tmp_path / "gated-4", "negative"), alias="production")
    assert_api_error(registered, 409, "gate_failed")
    assert "gated:4 was registered" in registered.value.message
    assert [v.version for v in sdk.list_versions("gated")] == [1, 2, 3, 4]
    assert sdk.aliases("gated")["production"] == 2
    # Rolling back is never gated; an admin may force a move with a reason, audited.
    forced = sdk.set_alias("gated", "production", 3, reason="incident 42", force=True)
    assert forced.event is not None
    assert forced.event.gate is not None
    assert forced.event.gate["forced"] is True
    [event] = sdk.audit(action="alias.set", target="models/gated/aliases/production").data[-1:]
    assert event.after is not None
    assert event.after["gate"]["forced"] is True
    assert event.after["reason"] == "incident 42"
    with pytest.raises(APIError) as no_reason:
        sdk.set_alias("gated", "production", 1, force=True)
    assert_api_error(no_reason, 400, "invalid_request")


def test_a_tenant_cannot_force_a_gated_move(
    server: RunningServer, sdk: Client, tmp_path: Path, mostly_positive: str
) -> None:
    sdk.create_project("gate-tenant")
    key = sdk.create_key(
        "gate-tenant", ["models:read", "models:write", "training"], project="gate-tenant"
    ).key
    with Client(server.url, api_key=key) as tenant:
        tenant.upload("mine", _classifier(tmp_path / "mine-1", "positive"), alias="production")
        tenant.upload("mine", _classifier(tmp_path / "mine-2", "negative"))
        path = tmp_path / "tenant-eval.jsonl"
        rows = [{"text": f"a text {i}", "label": LABELS[i % 10 < 7]} for i in range(20)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        file_id = tenant.upload_dataset(path).id
        tenant.set_policy("mine", "production", file_id, metric="macro_f1")
        with pytest.raises(APIError) as refused:
            tenant.set_alias("mine", "production", 2)
        assert_api_error(refused, 409, "gate_failed")
        with pytest.raises(APIError) as forbidden:
            tenant.set_alias("mine", "production", 2, reason="please", force=True)
        assert forbidden.value.status_code == 403
        # Another project's file is not one a policy may name.
        with pytest.raises(APIError) as foreign:
            tenant.set_policy("mine", "production", mostly_positive)
        assert (foreign.value.status_code, foreign.value.param) == (400, "file")
        with pytest.raises(APIError) as wrong_metric:
            tenant.set_policy("mine", "production", file_id, metric="ece")
        assert (wrong_metric.value.status_code, wrong_metric.value.param) == (400, "metric")


def test_a_jobs_alias_is_gated_and_the_job_says_so(
    server: RunningServer, sdk: Client, tmp_path: Path, mostly_positive: str
) -> None:
    _versions(sdk, tmp_path, "jobgated", ["positive"])
    # The ONNX export answers as its parent does: equal scores pass a min_delta of 0 ...
    sdk.set_policy("jobgated", "production", mostly_positive, metric="accuracy")
    job = sdk.create_optimization_job(
        "jobgated:1", "onnx", model_name="jobgated", alias="production"
    )
    job = sdk.wait_for_optimization_job(job.id)
    assert job.status == "succeeded", job.error
    assert sdk.aliases("jobgated")["production"] == 2
    # ... and fail a min_delta of 0.05: the version is registered, the alias stays.
    sdk.set_policy("jobgated", "production", mostly_positive, metric="accuracy", min_delta=0.05)
    job = sdk.wait_for_optimization_job(
        sdk.create_optimization_job(
            "jobgated:1", "onnx", model_name="jobgated", alias="production"
        ).id
    )
    assert job.status == "succeeded", job.error
    assert job.optimized_model == "jobgated:3"
    assert sdk.aliases("jobgated")["production"] == 2
    events = sdk.optimization_job_events(job.id).data
    assert any("alias 'production' stays where it was" in e.message for e in events), events


def test_the_docs_commands_run_as_written(
    server: RunningServer, sdk: Client, tmp_path: Path
) -> None:
    # sentiment: 1 says negative, 2 and 3 positive; the dev file is mostly positive, so the
    # gate lets 3 follow 2 (equal scores) and the split's promotion of 2 is an improvement.
    _versions(sdk, tmp_path, "sentiment", ["negative", "positive", "positive"])
    rows = [{"text": f"film {i}", "label": LABELS[i % 10 < 7]} for i in range(30)]
    (tmp_path / "sentiment-dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [script] = blocks(DOCS.read_text(encoding="utf-8"), "console")[:1]
    ran = run_script(server, script, tmp_path)
    assert ran.returncode == 0, f"{script}\n---\n{ran.stdout}\n{ran.stderr}"
    assert re.search(r"(?i)openmaas-model-version: sentiment:[12]", ran.stdout)
    assert (
        "sentiment@production: baseline 1 (sticky by x-user-id, automatic rollback)" in ran.stdout
    )
    assert "sentiment@production: 2 → 3 (move)" in ran.stdout
    assert "evaluation gate passed: macro_f1" in ran.stdout
    assert sdk.aliases("sentiment")["production"] == 3
