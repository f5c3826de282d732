"""`/v1/audit` and `/v1/usage` against a real server: each registry change audited exactly
once with its before/after state, usage filters and errors, who may see what, and the CLI.

Usage records are written into the server's database directly, dated in 2024, so requests
the tests themselves make (metered as they happen) never fall into the windows queried.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import APIError, Client
from openmaas.auth.keys import parse_key
from openmaas.client import PathSource
from openmaas.metering.usage import CSV_COLUMNS, UsageRecord, UsageRecorder
from openmaas.protocol.metering import AuditEventOut
from openmaas.store.database import Database
from tests.factories import write_hf_model
from tests.integration.conftest import RunningServer, assert_api_error

pytestmark = pytest.mark.integration

OPENMAAS = Path(sys.executable).parent / "openmaas"
MAY = {"start": "2024-05-01", "end": "2024-06-01"}
MAY_START, MAY_END = MAY["start"], MAY["end"]


def actions(events: list[AuditEventOut]) -> list[tuple[str, str]]:
    return [(event.action, event.target) for event in events]


def audit_of(sdk: Client, target: str) -> list[AuditEventOut]:
    return sdk.audit(target=target, limit=1000).data


# -- audit ----------------------------------------------------------------------------------


def test_each_registry_change_is_audited_once_with_before_and_after(
    sdk: Client, shared_server: RunningServer, tmp_path: Path
) -> None:
    name = "audited"
    v1 = sdk.upload(name, write_hf_model(tmp_path / "a", seed=1), alias="staging")
    v2 = sdk.register(name, PathSource(path=str(write_hf_model(tmp_path / "b", seed=2))))
    sdk.update_model(name, description="sentiment of reviews")
    sdk.update_model(name, description="sentiment of reviews")  # no change: not recorded
    sdk.update_version(name, 2, tags={"team": "nlp"})
    sdk.set_alias(name, "production", 1, reason="first")
    sdk.set_alias(name, "production", 2, reason="better")
    sdk.set_alias(name, "production", 2)  # already there: not recorded
    sdk.rollback(name, "production", reason="regression")
    with pytest.raises(APIError) as refused:
        sdk.delete_version(name, 1)  # aliases point at it: refused, so not recorded
    assert_api_error(refused, 409, "conflict")
    sdk.delete_version(name, 2)
    sdk.delete_alias(name, "staging", reason="unused")
    sdk.delete_model(name)

    events = audit_of(sdk, f"models/{name}")

    m, v, a = f"models/{name}", f"models/{name}/versions", f"models/{name}/aliases"
    assert actions(events) == [
        ("version.register", f"{v}/1"),
        ("version.register", f"{v}/2"),
        ("model.update", m),
        ("version.update", f"{v}/2"),
        ("alias.set", f"{a}/production"),
        ("alias.set", f"{a}/production"),
        ("alias.rollback", f"{a}/production"),
        ("version.delete", f"{v}/2"),
        ("alias.delete", f"{a}/staging"),
        ("model.delete", m),
    ]
    admin_actor = "om-" + parse_key(shared_server.key).prefix
    for event in events:
        assert (event.actor, event.project, event.client_address) == (
            admin_actor,
            "default",
            "127.0.0.1",
        )
        assert event.request_id
    (reg1, reg2, edit, vedit, set1, set2, rollback, vdelete, adelete, mdelete) = events
    assert reg1.before is None
    assert reg1.after is not None
    assert reg1.after["alias"] == "staging"
    assert reg1.after["source"]["type"] == "upload"
    assert (reg1.after["task"], reg1.after["files"]) == ("text-classification", len(v1.files))
    assert reg2.after is not None
    assert (reg2.after["alias"], reg2.after["source"]["type"]) == (None, "path")
    assert reg1.after["manifest_sha256"] != reg2.after["manifest_sha256"]  # other weights
    assert (edit.before, edit.after) == (
        {"description": ""},
        {"description": "sentiment of reviews"},
    )
    assert (vedit.before, vedit.after) == ({"tags": {}}, {"tags": {"team": "nlp"}})
    assert (set1.before, set1.after) == ({"version": None}, {"version": 1, "reason": "first"})
    assert (set2.before, set2.after) == ({"version": 1}, {"version": 2, "reason": "better"})
    assert (rollback.before, rollback.after) == (
        {"version": 2},
        {"version": 1, "reason": "regression"},
    )
    assert vdelete.before is not None
    assert (vdelete.after, vdelete.before["tags"], vdelete.before["aliases"]) == (
        None,
        {"team": "nlp"},
        [],
    )
    assert vdelete.before["size_bytes"] == v2.size_bytes
    assert (adelete.before, adelete.after) == (
        {"version": 1},
        {"version": None, "reason": "unused"},
    )
    assert mdelete.after is None
    assert mdelete.before == {
        "description": "sentiment of reviews",
        "tags": {},
        "latest_version": 1,
        "aliases": {"production": 1},
        "versions": [1],
    }
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_audit_carries_the_callers_request_id_and_pages(
    sdk: Client, shared_server: RunningServer, tmp_path: Path
) -> None:
    name = "paged"
    sdk.upload(name, write_hf_model(tmp_path / "m", seed=3))
    for n in range(5):
        response = httpx.patch(
            f"{shared_server.url}/v1/registry/models/{name}",
            json={"description": f"edit {n}"},
            headers={**shared_server.headers, "X-Request-Id": f"edit-{n}"},
        )
        assert response.status_code == 200

    first = sdk.audit(target=f"models/{name}", action="model.update", limit=3)
    assert [e.request_id for e in first.data] == ["edit-0", "edit-1", "edit-2"]
    assert first.next_after_id == first.data[-1].id
    rest = sdk.audit(target=f"models/{name}", action="model.update", after_id=first.next_after_id)
    assert ([e.request_id for e in rest.data], rest.next_after_id) == (["edit-3", "edit-4"], None)


def test_audit_needs_an_admin_key_and_valid_filters(
    sdk: Client, shared_server: RunningServer
) -> None:
    reader = sdk.create_key("audit-reader", ["models:read", "inference"]).key
    with Client(shared_server.url, api_key=reader) as client, pytest.raises(APIError) as denied:
        client.audit()
    assert_api_error(denied, 403, "insufficient_scope")

    url = f"{shared_server.url}/v1/audit"
    bad_time = httpx.get(url, params={"start": "yesterday"}, headers=shared_server.headers)
    assert bad_time.status_code == 400
    assert "start: 'yesterday' is not a timestamp; use ISO 8601" in bad_time.text
    too_many = httpx.get(url, params={"limit": 5000}, headers=shared_server.headers)
    assert (too_many.status_code, too_many.json()["error"]["param"]) == (400, "limit")


# -- usage ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def usage_records(shared_server: RunningServer) -> list[UsageRecord]:
    """Records for May 2024 in projects default and acme, written next to the server."""
    client = Client(shared_server.url, api_key=shared_server.key)
    client.create_project("acme")
    client.close()
    day1, day2 = datetime(2024, 5, 1, 23, 59, tzinfo=UTC), datetime(2024, 5, 2, 0, 1, tzinfo=UTC)
    records = [
        UsageRecord(created_at=day1, project="default", key_id=1, key_prefix="aaaa1111",
                    model="minilm", route="/v1/embeddings", input_tokens=1000,
                    latency_ms=10.0, status=200),
        UsageRecord(created_at=day2, project="default", key_id=1, key_prefix="aaaa1111",
                    model="minilm", route="/v1/embeddings", input_tokens=500,
                    latency_ms=30.0, status=200),
        UsageRecord(created_at=day2, project="default", key_id=2, key_prefix="bbbb2222",
                    model="gpt", route="/v1/chat/completions", input_tokens=20,
                    output_tokens=80, latency_ms=200.0, status=500),
        UsageRecord(created_at=day2, project="acme", key_id=9, key_prefix="cccc3333",
                    model="minilm", route="/v1/embeddings", input_tokens=7,
                    latency_ms=5.0, status=200),
    ]  # fmt: skip
    db = Database(f"sqlite:///{shared_server.home / 'openmaas.db'}")
    recorder = UsageRecorder(db, flush_s=60.0)
    for record in records:
        recorder.record(record)
    recorder.close()
    db.close()
    return records


def get_usage(server: RunningServer, key: str | None = None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or server.key}"}
    return httpx.get(f"{server.url}/v1/usage", params=params, headers=headers)


def test_usage_totals_group_and_filter(sdk: Client, usage_records: list[UsageRecord]) -> None:
    report = sdk.usage(start="2024-05-01", end="2024-06-01", group_by=["day", "model"])

    assert report.group_by == ["day", "model"]
    rows = [(g.day.isoformat() if g.day else None, g.model, g.requests) for g in report.data]
    assert rows == [
        ("2024-05-01", "minilm", 1),
        ("2024-05-02", "gpt", 1),
        ("2024-05-02", "minilm", 2),
    ]
    total = report.total
    assert (total.requests, total.errors, total.input_tokens, total.output_tokens) == (
        4,
        1,
        1527,
        80,
    )
    assert total.latency_ms_max == 200.0

    by_key = sdk.usage(start=MAY_START, end=MAY_END, project="default", group_by=["key"])
    assert [(g.key_prefix, g.requests, g.total_tokens) for g in by_key.data] == [
        ("aaaa1111", 2, 1500),
        ("bbbb2222", 1, 100),
    ]
    assert by_key.filters == {"project": "default"}
    only = sdk.usage(
        start=MAY_START, end=MAY_END, key_prefix="aaaa1111", model="minilm", group_by=[]
    )
    assert (only.data[0].requests, only.total.input_tokens) == (2, 1500)
    assert sdk.usage(start=MAY_START, end=MAY_END, key_id=9).total.requests == 1


def test_usage_refuses_bad_filters_with_what_to_fix(
    shared_server: RunningServer, usage_records: list[UsageRecord]
) -> None:
    cases = [
        ({"group_by": "day,week"}, "group_by", "unknown group_by 'week'"),
        ({"start": "2024-06-01", "end": "2024-05-01"}, "start", "must be before end"),
        ({"start": "May 1st"}, "start", "'May 1st' is not a timestamp; use ISO 8601"),
        ({"end": "2024-13-01"}, "end", "is not a timestamp"),
        ({"key_id": "abc"}, "key_id", "key_id"),
        ({"format": "xml"}, "format", "format"),
    ]
    for params, param, fragment in cases:
        response = get_usage(shared_server, **params)
        assert response.status_code == 400, params
        error = response.json()["error"]
        assert (error["param"], error["type"]) == (param, "invalid_request_error"), params
        assert fragment in error["message"], error


def test_a_project_key_sees_its_own_project_only(
    sdk: Client, shared_server: RunningServer, usage_records: list[UsageRecord]
) -> None:
    key = sdk.create_key("acme-app", ["inference"], project="acme").key

    own = get_usage(shared_server, key, **MAY, group_by="project")
    assert own.status_code == 200
    body = own.json()
    assert [(g["project"], g["requests"]) for g in body["data"]] == [("acme", 1)]
    assert body["filters"] == {"project": "acme"}

    other = get_usage(shared_server, key, **MAY, project="default")
    missing = get_usage(shared_server, key, **MAY, project="no-such-project")
    assert (other.status_code, missing.status_code) == (404, 404)
    assert other.json()["error"]["message"] == "project 'default' not found"
    # Nothing tells an existing project from a missing one but the name itself.
    assert other.json()["error"] | {"message": ""} == missing.json()["error"] | {"message": ""}

    # An admin sees every project, and a missing one is missing for an admin too.
    everyone = get_usage(shared_server, **MAY, group_by="project").json()
    assert [(g["project"], g["requests"]) for g in everyone["data"]] == [
        ("acme", 1),
        ("default", 3),
    ]
    assert get_usage(shared_server, **MAY, project="no-such-project").status_code == 404


def test_usage_csv_for_billing(sdk: Client, usage_records: list[UsageRecord]) -> None:
    text = sdk.usage_csv(start=MAY_START, end=MAY_END, project="default")

    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["day"], r["key_prefix"], r["model"], r["total_tokens"]) for r in rows] == [
        ("2024-05-01", "aaaa1111", "minilm", "1000"),
        ("2024-05-02", "aaaa1111", "minilm", "500"),
        ("2024-05-02", "bbbb2222", "gpt", "100"),
    ]
    # This server has no price table: costs stay empty rather than zero.
    assert {r["cost"] for r in rows} == {""}


# -- CLI ------------------------------------------------------------------------------------


def cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENMAAS_URL": server.url, "OPENMAAS_API_KEY": server.key}
    return subprocess.run(
        [str(OPENMAAS), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_usage_csv_table_and_json(
    shared_server: RunningServer, usage_records: list[UsageRecord]
) -> None:
    result = cli(shared_server, "usage", "--since", "2024-05-01", "--until", "2024-06-01", "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sum(int(r["requests"]) for r in rows) == 4
    assert {r["project"] for r in rows} == {"default", "acme"}

    table = cli(shared_server, "usage", "--since", "2024-05-01", "--until", "2024-06-01",
                "--group-by", "model")  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "MODEL" in table.stdout
    assert "TOTAL" in table.stdout
    assert "minilm" in table.stdout

    as_json = cli(shared_server, "usage", "--since", "2024-05-01", "--until", "2024-06-01",
                  "--model", "gpt", "--json")  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["total"]["output_tokens"] == 80

    both = cli(shared_server, "usage", "--json", "--csv")
    assert both.returncode == 2
    assert both.stderr.startswith("error: --json and --csv exclude each other")

    recent = cli(shared_server, "usage", "--since", "2h", "--json")  # an age, not a date
    assert recent.returncode == 0, recent.stderr


def test_cli_usage_table_rounds_the_mean_latency(shared_server: RunningServer) -> None:
    july = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)  # a month no other test reads
    db = Database(f"sqlite:///{shared_server.home / 'openmaas.db'}")
    recorder = UsageRecorder(db, flush_s=60.0)
    for latency_ms in (1.0, 2.0, 2.0):  # a mean of 1.666…
        recorder.record(
            UsageRecord(created_at=july, project="default", key_id=1, key_prefix="dddd4444",
                        model="rounded", route="/v1/embeddings", latency_ms=latency_ms,
                        status=200)
        )  # fmt: skip
    recorder.close()
    db.close()
    table = cli(shared_server, "usage", "--since", "2024-07-01", "--until", "2024-07-02")
    assert table.returncode == 0, table.stderr
    (total,) = [line for line in table.stdout.splitlines() if "TOTAL" in line]
    assert total.split()[-1] == "1.7", table.stdout


def test_cli_audit_json(sdk: Client, shared_server: RunningServer, tmp_path: Path) -> None:
    sdk.upload("cli-audited", write_hf_model(tmp_path / "m", seed=4))
    sdk.set_alias("cli-audited", "production", 1, reason="ship")

    result = cli(shared_server, "audit", "--target", "models/cli-audited", "--json")

    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)
    assert [(e["action"], e["after"].get("reason")) for e in events] == [
        ("version.register", None),
        ("alias.set", "ship"),
    ]

    paged = cli(shared_server, "audit", "--target", "models/cli-audited", "--limit", "1")
    assert paged.returncode == 0, paged.stderr
    assert "version.register" in paged.stdout
    assert "alias.set" not in paged.stdout
    assert "more events follow: add --after-id" in paged.stderr


# -- the documentation ----------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "usage-and-audit.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def test_every_example_in_the_guide_runs(
    shared_server: RunningServer, usage_records: list[UsageRecord], tmp_path: Path
) -> None:
    blocks = [
        (lang, body) for lang, body in FENCE.findall(DOC.read_text()) if lang in ("bash", "python")
    ]
    assert len(blocks) == 5
    env = {
        **os.environ,
        "OPENMAAS_URL": shared_server.url,
        "OPENMAAS_API_KEY": shared_server.key,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
    }
    for lang, body in blocks:
        command = (
            ["bash", "-euo", "pipefail", "-c", body]
            if lang == "bash"
            else [sys.executable, "-c", body]
        )
        result = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"{body}\n---\n{result.stdout}\n{result.stderr}"
    rows = list(csv.DictReader(io.StringIO((tmp_path / "may.csv").read_text())))
    assert sum(int(r["requests"]) for r in rows) == len(usage_records)
