"""Rate limits, quotas and brute-force protection against real servers: in memory, and two
server processes sharing one limit through the Redis at 127.0.0.1:6379."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from openmaas import Client
from openmaas.auth.keys import generate_key
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.integration.waiting import wait_for
from tests.tcp_proxy import StallingProxy

REDIS_URL = "redis://127.0.0.1:6379/0"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def classify(server: RunningServer, key: str, text: str = "good") -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/classify", json={"model": "vader", "input": text}, headers=bearer(key)
    )


def project_key(server: RunningServer, limits: dict[str, int], **key_limits: int) -> str:
    """A fresh project (unique name: Redis counters outlive a test) and an inference key."""
    name = f"p-{uuid.uuid4().hex[:10]}"
    with Client(server.url, api_key=server.key) as admin:
        admin.create_project(name, limits=limits)
        return admin.create_key("app", ["inference"], project=name, limits=key_limits).key


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("limits") / "home", {"OPENMAAS_CATALOG_AUTOREGISTER": "true"}
    )
    yield running
    stop_server(running)


def test_requests_per_minute_answer_429_with_retry_after(limited: RunningServer) -> None:
    key = project_key(limited, {"requests_per_minute": 3})
    assert [classify(limited, key).status_code for _ in range(3)] == [200, 200, 200]
    refused = classify(limited, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == f"{refused.headers['retry-after']}s"


def test_a_key_override_is_tighter_than_its_project(limited: RunningServer) -> None:
    key = project_key(limited, {"requests_per_minute": 100}, requests_per_minute=1)
    assert classify(limited, key).status_code == 200
    assert classify(limited, key).status_code == 429


def test_a_project_limit_never_locks_out_its_admin(limited: RunningServer) -> None:
    """Project limits bound the tenants' keys: an admin of the limited project keeps working,
    so it can always undo the limit (it used to lock itself out until a restart)."""
    name = f"p-{uuid.uuid4().hex[:10]}"
    with Client(limited.url, api_key=limited.key) as admin:
        admin.create_project(name, limits={"requests_per_minute": 1})
        tenant = admin.create_key("app", ["inference"], project=name).key
        operator = admin.create_key("ops", ["admin"], project=name).key
    assert [classify(limited, tenant).status_code for _ in range(2)] == [200, 429]
    assert [classify(limited, operator).status_code for _ in range(3)] == [200, 200, 200]
    lifted = httpx.put(
        f"{limited.url}/v1/projects/{name}/limits",
        json={"limits": {"requests_per_minute": 100}},
        headers=bearer(operator),
    )
    assert lifted.status_code == 200, lifted.text


def test_a_used_up_token_quota_says_which_and_until_when(limited: RunningServer) -> None:
    key = project_key(limited, {"tokens_per_day": 60})
    text = "This sentence has quite a few tokens in it."  # a bound of 47 tokens, uses fewer
    used = 0
    for _ in range(60):
        answer = classify(limited, key, text)
        if answer.status_code != 200:
            break
        used += answer.json()["usage"]["total_tokens"]
    assert 0 < used <= 60  # reserved before, settled after: never past the quota
    assert answer.status_code == 429
    error = answer.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert answer.headers["x-should-retry"] == "false"
    assert f"has {60 - used} of its 60 tokens per day left today" in error["message"]
    assert "T00:00:00Z" in error["message"]


def test_a_request_larger_than_a_quota_is_refused_before_it_runs(
    limited: RunningServer,
) -> None:
    key = project_key(limited, {"tokens_per_day": 10})
    refused = classify(limited, key, "This sentence has quite a few tokens in it.")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert "request too large" in error["message"]
    assert "10 tokens per day" in error["message"]
    # It held nothing: a small request (a bound of 6 tokens) still fits.
    assert classify(limited, key, "ok").status_code == 200


def test_responses_say_what_remains_of_the_minute(limited: RunningServer) -> None:
    """OpenAI's x-ratelimit-* headers: the tightest of the project's and the key's limits."""
    key = project_key(
        limited, {"requests_per_minute": 100, "tokens_per_minute": 10_000}, requests_per_minute=50
    )
    first = classify(limited, key, "This sentence has quite a few tokens in it.")
    second = classify(limited, key)
    assert first.status_code == second.status_code == 200
    for response in (first, second):
        assert response.headers["x-ratelimit-limit-requests"] == "50"  # the key's, tighter
        assert response.headers["x-ratelimit-limit-tokens"] == "10000"
        assert 1 <= int(response.headers["x-ratelimit-reset-requests"].removesuffix("s")) <= 60
    assert first.headers["x-ratelimit-remaining-requests"] == "49"
    assert first.headers["x-ratelimit-remaining-tokens"] == "10000"  # counted when served
    # Within one clock minute the counts go down; across a minute boundary they start over.
    used = first.json()["usage"]["total_tokens"]
    assert second.headers["x-ratelimit-remaining-requests"] in ("48", "49")
    assert second.headers["x-ratelimit-remaining-tokens"] in (str(10_000 - used), "10000")
    # A caller without limits gets no such headers.
    unlimited = classify(limited, project_key(limited, {}))
    assert unlimited.status_code == 200
    assert "x-ratelimit-limit-requests" not in unlimited.headers


def test_limits_are_validated(limited: RunningServer) -> None:
    with Client(limited.url, api_key=limited.key) as admin:
        for limits in ({"requests_per_hour": 5}, {"tokens_per_day": -1}, {"tokens_per_day": "x"}):
            response = httpx.post(
                f"{limited.url}/v1/projects",
                json={"name": f"bad-{uuid.uuid4().hex[:6]}", "limits": limits},
                headers=limited.headers,
            )
            assert response.status_code == 400, limits
            assert "limits" in (response.json()["error"]["param"] or "")
        assert all(not p.name.startswith("bad-") for p in admin.list_projects())


def test_a_stalled_redis_is_a_retryable_503_and_service_comes_back_with_it(
    tmp_path: Path,
) -> None:
    """Redis that stops answering (a hung node, a partition) costs a request its 2 s timeout
    and a 503 with Retry-After naming the setting, never a 500; once it answers again, so
    does the server."""
    with StallingProxy(("127.0.0.1", 6379)) as proxy:
        server = start_server(
            tmp_path / "home",
            {
                "OPENMAAS_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
                "OPENMAAS_CATALOG_AUTOREGISTER": "true",
            },
        )
        try:
            key = project_key(server, {"requests_per_minute": 100})
            assert classify(server, key).status_code == 200
            proxy.stalled.set()
            asked_at = time.monotonic()
            refused = classify(server, key)
            waited_s = time.monotonic() - asked_at
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "limits_unavailable"
            assert "OPENMAAS_REDIS_URL" in error["message"]
            assert refused.headers["retry-after"] == "1"
            assert waited_s < 10  # the store's timeout, not a hang
            proxy.stalled.clear()
            wait_for(
                "the server to answer again",
                lambda: True if classify(server, key).status_code == 200 else None,
                30,
            )
        finally:
            stop_server(server)


# -- two processes, one Redis -----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two servers on one database and one Redis, as two nodes behind a load balancer; the
    tests that share them each limit a fresh project of their own."""
    tmp_path = tmp_path_factory.mktemp("redis-pair")
    client: Any = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - the CI machine runs Redis
        pytest.fail(f"Redis at {REDIS_URL} is required for this test: {exc}")
    finally:
        client.close()
    shared = {
        "OPENMAAS_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "OPENMAAS_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "OPENMAAS_REDIS_URL": REDIS_URL,
        "OPENMAAS_KEY_PEPPER": generate_key().secret,
        "OPENMAAS_CATALOG_AUTOREGISTER": "true",
    }
    first = start_server(tmp_path / "a", shared)
    second = start_server(tmp_path / "b", shared)
    yield first, second
    stop_server(first)
    stop_server(second)


def test_two_servers_sharing_redis_enforce_one_combined_limit(
    redis_pair: tuple[RunningServer, RunningServer],
) -> None:
    first, second = redis_pair
    key = project_key(first, {"requests_per_minute": 4})
    answers = [classify(server, key).status_code for server in (first, second) * 3]
    assert answers == [200, 200, 200, 200, 429, 429]


def test_two_servers_sharing_redis_never_pass_a_token_limit_together(
    redis_pair: tuple[RunningServer, RunningServer],
) -> None:
    """Tokens are reserved (an upper bound) before a request runs, in the shared Redis, and
    settled after: concurrent requests through both servers stay within one token limit."""
    first, second = redis_pair
    text = "This sentence has quite a few tokens in it."  # a bound of 47 tokens

    def burst() -> list[httpx.Response]:
        key = project_key(first, {"tokens_per_minute": 200})

        def call(i: int) -> httpx.Response:
            return classify((first, second)[i % 2], key, text)

        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(call, range(48)))

    for _ in range(2):  # per-minute counters start over each minute: one burst in one minute
        minute = int(time.time() // 60)
        answers = burst()
        if int(time.time() // 60) == minute:
            break
    served = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert served
    assert refused
    assert {a.json()["error"]["code"] for a in refused} == {"rate_limit_exceeded"}
    # Each served request charged its real tokens, at most its bound: within the limit.
    assert sum(a.json()["usage"]["total_tokens"] for a in served) <= 200


# -- brute force ------------------------------------------------------------------------------


def test_repeated_wrong_keys_are_slowed_then_refused(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "home",
        {
            "OPENMAAS_AUTH_FAILURES_BEFORE_DELAY": "2",
            "OPENMAAS_AUTH_FAILURES_BEFORE_BLOCK": "4",
            "OPENMAAS_AUTH_BLOCK_S": "60",
        },
    )
    try:
        url = f"{server.url}/v1/models"
        wrong = [httpx.get(url, headers=bearer(generate_key().plaintext)) for _ in range(4)]
        assert [r.status_code for r in wrong] == [401, 401, 401, 401]
        assert wrong[3].elapsed.total_seconds() > wrong[0].elapsed.total_seconds()
        # The address is now refused, even with a valid key, until the block ends.
        blocked = httpx.get(url, headers=server.headers)
        assert blocked.status_code == 429
        assert blocked.json()["error"]["code"] == "too_many_auth_failures"
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
    finally:
        stop_server(server)


# -- metering ---------------------------------------------------------------------------------


def test_usage_totals_match_the_requests_made(limited: RunningServer) -> None:
    key = project_key(limited, {})
    texts = ["good", "This is a fine day.", "Awful, just awful!", "ok"]
    answers = [classify(limited, key, text) for text in texts]
    tokens = sum(answer.json()["usage"]["total_tokens"] for answer in answers)
    wrong_task = httpx.post(
        f"{limited.url}/v1/ner", json={"model": "vader", "input": "x"}, headers=bearer(key)
    )
    assert wrong_task.status_code == 400
    with Client(limited.url, api_key=key) as tenant:
        project = tenant.whoami().project
        deadline = time.monotonic() + 30
        while True:  # usage is written in batches every OPENMAAS_USAGE_FLUSH_S
            report = tenant.usage(group_by=["route"])
            if report.total.requests >= len(texts) + 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    by_route = {group.route: group for group in report.data}
    assert report.filters["project"] == project
    assert by_route["/v1/classify"].requests == len(texts)
    assert by_route["/v1/classify"].input_tokens == tokens
    assert by_route["/v1/classify"].items == len(texts)
    assert by_route["/v1/classify"].errors == 0
    assert (by_route["/v1/ner"].requests, by_route["/v1/ner"].errors) == (1, 1)
