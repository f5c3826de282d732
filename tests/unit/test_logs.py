"""Structured logs carry the request id of the request they belong to."""

from __future__ import annotations

import json
import logging

from openmaas.observability.logs import JsonFormatter, RequestIdFilter, request_id_var


def test_json_lines_carry_the_request_id() -> None:
    record = logging.LogRecord(
        "openmaas.test", logging.WARNING, __file__, 1, "loaded %s", ("m",), None
    )
    token = request_id_var.set("req-123")
    try:
        assert RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "req-123"
    assert entry["message"] == "loaded m"
    assert entry["level"] == "warning"
    assert entry["logger"] == "openmaas.test"


def test_outside_a_request_the_id_is_a_dash() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "idle", (), None)
    RequestIdFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "-"
