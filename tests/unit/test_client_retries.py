"""The SDK's retry rules, as pure functions: what a Retry-After says, which answers are worth
another attempt, and how long the backoff waits (`client.transport`)."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from openmaas.client.transport import (
    MAX_RETRY_AFTER_S,
    MAX_RETRY_DELAY_S,
    retry_after_s,
    retry_delay_s,
    should_retry,
)

NOW = 1_700_000_000.0


def _answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers={k.replace("_", "-"): v for k, v in headers.items()})


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # milliseconds win
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_seconds_milliseconds_and_http_dates(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_s(headers, now=NOW) == seconds


@pytest.mark.parametrize(
    ("status", "headers", "retried"),
    [
        (429, {}, True),
        (408, {}, True),
        (500, {}, True),
        (503, {}, True),
        (400, {}, False),
        (404, {}, False),
        (409, {}, False),  # a conflict with the server's state: asking again cannot help
        (503, {"x_should_retry": "false"}, False),
        (400, {"x_should_retry": "true"}, True),
        (429, {"retry_after": str(int(MAX_RETRY_AFTER_S) + 1)}, False),  # too long to wait
        (429, {"retry_after": "60", "x_should_retry": "true"}, True),
    ],
)
def test_which_answers_are_retried(status: int, headers: dict[str, str], retried: bool) -> None:
    assert should_retry(_answer(status, **headers)) is retried


def test_the_delay_is_the_servers_retry_after_when_it_is_usable() -> None:
    assert retry_delay_s(0, {"retry-after": "7"}) == 7.0
    # Zero, negative (a date gone by) or unreadable: backoff instead.
    for value in ("0", "-3", "later"):
        assert retry_delay_s(0, {"retry-after": value}, jitter=lambda: 0.0) == 0.5


def test_backoff_doubles_up_to_its_cap_less_up_to_a_quarter_of_jitter() -> None:
    assert [retry_delay_s(n, jitter=lambda: 0.0) for n in range(6)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        MAX_RETRY_DELAY_S,
        MAX_RETRY_DELAY_S,
    ]
    assert retry_delay_s(1, jitter=lambda: 1.0) == 0.75
    assert retry_delay_s(10_000, jitter=lambda: 0.0) == MAX_RETRY_DELAY_S
