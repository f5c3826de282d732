"""One tenant's input must not hurt the others' requests (issue 13), against real servers:

- a text past the input limit is refused with a 400 before it is batched, while 30 requests
  of other projects answer 200 (the audit's 1.1M-character NER input had turned all 30 into
  500s);
- an item the runtime breaks on fails its own request only: the batch it shared is run again
  one item at a time (a custom runtime that raises on one input, served by the real server);
- TextRank refuses a text of 1,600 sentences at once instead of spending half a minute on it;
- the response cache is each project's own: another project's identical input is not a hit.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from openmaas import Client
from tests.integration import authed
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.integration.probes import PROBE_BUDGET_S, probing
from tests.reverse_task import POISON, write_model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]  # where `tests` is importable from
OTHERS = 30  # the other tenants' requests sharing the model with the attack
NER = "en-core-web-sm"
SENTENCE = "Angela Merkel met Barack Obama in Paris on Monday."


def project_keys(server: RunningServer, count: int) -> list[str]:
    """An inference key in each of `count` fresh projects."""
    keys = []
    with Client(server.url, api_key=server.key) as admin:
        for _ in range(count):
            project = f"tenant-{uuid.uuid4().hex[:8]}"
            admin.create_project(project)
            keys.append(admin.create_key("app", ["inference"], project=project).key)
    return keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric(server: RunningServer, sample: str) -> float:
    """A sample's value in /metrics (0 when it is not there yet)."""
    for line in authed.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_text_past_the_limit_is_refused_and_30_other_tenants_are_answered(
    serving_server: RunningServer,
) -> None:
    url = f"{serving_server.url}/v1/ner"
    keys = project_keys(serving_server, 3)

    def ner(key: str, text: str) -> httpx.Response:
        return httpx.post(url, json={"model": NER, "input": text}, headers=bearer(key), timeout=120)

    warm = ner(keys[0], SENTENCE)
    assert warm.status_code == 200, warm.text  # the pipeline is loaded before the attack
    huge = "Angela Merkel visited Paris. " * 38_000  # 1.1M characters, as in the audit
    assert len(huge) > 1_100_000

    attacker = project_keys(serving_server, 1)[0]
    with probing(serving_server) as probes, ThreadPoolExecutor(max_workers=OTHERS + 1) as pool:
        others = [pool.submit(ner, keys[i % len(keys)], f"{SENTENCE} ({i})") for i in range(15)]
        attack = pool.submit(ner, attacker, huge)
        others += [
            pool.submit(ner, keys[i % len(keys)], f"{SENTENCE} ({i})") for i in range(15, 30)
        ]
        refused = attack.result()
        answered = [future.result() for future in others]

    probes.assert_within(PROBE_BUDGET_S)  # the probes kept answering throughout
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "input_too_large"
    assert error["param"] == "input"
    assert error["message"].startswith(f"input[0] has {len(huge):,} characters; model '{NER}:")
    assert "accepts at most 100,000 (OPENMAAS_MAX_INPUT_CHARS)" in error["message"]
    assert [r.status_code for r in answered] == [200] * OTHERS
    for response in answered:
        found = {(e["text"], e["label"]) for e in response.json()["data"][0]["entities"]}
        assert {("Angela Merkel", "PERSON"), ("Paris", "GPE")} <= found


def test_textrank_refuses_1600_sentences_at_once(serving_server: RunningServer) -> None:
    def sentences(count: int) -> str:
        return " ".join(f"Cats sleep on mat number {i}." for i in range(count))

    text = sentences(1_600)
    assert len(text) < 100_000  # under the character limit: the sentences are what count
    started = time.perf_counter()
    refused = authed.post(
        f"{serving_server.url}/v1/summarize", json={"model": "textrank", "input": text}, timeout=60
    )
    elapsed = time.perf_counter() - started
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "input_too_large"
    assert "has 1,600 sentences" in error["message"]
    assert "takes at most 400" in error["message"]
    # Summarizing it took 37.5 s of the model's only thread in the audit; counting is
    # milliseconds (the bound is loose for a loaded test machine).
    assert elapsed < 5, elapsed
    fine = authed.post(
        f"{serving_server.url}/v1/summarize",
        json={"model": "textrank", "input": sentences(40)},
        timeout=60,
    )
    assert fine.status_code == 200, fine.text


def test_the_response_cache_is_not_shared_between_projects(serving_server: RunningServer) -> None:
    first, second = project_keys(serving_server, 2)
    model = "all-minilm-l6-v2"
    labels = f'{{model="{model}",task="embedding"}}'
    text = f"what did the other tenant send? {uuid.uuid4().hex}"

    def embed(key: str) -> None:
        response = httpx.post(
            f"{serving_server.url}/v1/embeddings",
            json={"model": model, "input": text},
            headers=bearer(key),
            timeout=60,
        )
        assert response.status_code == 200, response.text

    def counts() -> tuple[float, float]:
        return (
            metric(serving_server, f"openmaas_cache_hits_total{labels}"),
            metric(serving_server, f"openmaas_cache_misses_total{labels}"),
        )

    embed(first)
    hits, misses = counts()
    embed(second)  # the same text from another project: computed, not a hit
    assert counts() == (hits, misses + 1)
    embed(first)  # the first project's own entry still answers it
    assert counts() == (hits + 1, misses + 1)


# -- a runtime that breaks on one input -------------------------------------------------------


@pytest.fixture(scope="module")
def reversing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with the suite's reverse-text task (whose runtime raises on POISON) and
    batches that close only when full, at OTHERS + 1 items: the poisoned request and the
    others share one batch however their requests arrive."""
    home = tmp_path_factory.mktemp("poison") / "home"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "PYTHONPATH": path,
        "OPENMAAS_MAX_BATCH_SIZE": str(OTHERS + 1),
        "OPENMAAS_MAX_WAIT_MS": "60000",
    }
    running = start_server(home, env, module="tests.reverse_task")
    with Client(running.url, api_key=running.key) as sdk:
        sdk.upload("reverser", write_model(home.parent / "reverser"))
    yield running
    stop_server(running)


def reverse(server: RunningServer, text: str) -> httpx.Response:
    body = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    return authed.post(f"{server.url}/v2/models/reverser/infer", json=body, timeout=120)


def test_an_item_the_runtime_breaks_on_fails_alone(reversing_server: RunningServer) -> None:
    splits = 'openmaas_batch_splits_total{model="reverser"}'
    texts = [f"text {i}" for i in range(OTHERS)]
    with probing(reversing_server) as probes, ThreadPoolExecutor(max_workers=OTHERS + 1) as pool:
        others = [pool.submit(reverse, reversing_server, t) for t in texts[:15]]
        poisoned = pool.submit(reverse, reversing_server, POISON)
        others += [pool.submit(reverse, reversing_server, t) for t in texts[15:]]
        failed = poisoned.result()
        answered = [future.result() for future in others]

    # The runtime's own error is the poisoned request's alone (a server error, its
    # internals hidden behind the request id).
    probes.assert_within(PROBE_BUDGET_S)
    assert failed.status_code == 500, failed.text
    assert "broke" not in failed.text
    assert [r.status_code for r in answered] == [200] * OTHERS
    assert [r.json()["outputs"][0]["data"] for r in answered] == [[t[::-1]] for t in texts]
    # They shared one batch, which failed and was run again item by item, once each.
    assert metric(reversing_server, splits) == 1
    sizes = 'openmaas_batch_size_{}{{model="reverser"}}'
    assert metric(reversing_server, sizes.format("count")) == 1 + (OTHERS + 1)
    assert metric(reversing_server, sizes.format("sum")) == 2 * (OTHERS + 1)
