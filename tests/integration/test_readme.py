"""The README's examples, executed as written against a real server on its first start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from openmaas import Client
from openmaas.protocol.registry import PathSource
from openmaas.settings import Settings
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.runtimes.tiny_models import build_gpt2

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(title: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(section(title)) if lang == language]


def script_env(server: RunningServer) -> dict[str, str]:
    """A shell like the reader's: the virtualenv active and `OPENMAAS_URL` exported."""
    return {
        **os.environ,
        "OPENMAAS_URL": server.url,
        "OPENMAAS_API_KEY": server.key,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
    }


@pytest.fixture(scope="module")
def first_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on a fresh home with the catalog registered, as `make serve` starts it."""
    home = tmp_path_factory.mktemp("readme") / "home"
    # As on a fresh machine: no key given, the server generates one and prints it.
    server = start_server(home, {"OPENMAAS_CATALOG_AUTOREGISTER": "true"}, admin_key=None)
    assert server.key, f"no admin key printed on first start; see {server.log}"
    yield server
    stop_server(server)


def test_quickstart_commands_run_as_written(first_start: RunningServer) -> None:
    commands = blocks("Quickstart (5 minutes)", "bash")
    assert len(commands) == 3
    env = script_env(first_start)
    for block in commands:
        # The virtualenv is already active for the test run.
        script = block.replace("source .venv/bin/activate\n", "")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{script}\n---\n{result.stdout}\n{result.stderr}"

    models = httpx.get(f"{first_start.url}/v1/registry/models", headers=first_start.headers).json()[
        "data"
    ]
    names = {m["name"] for m in models}
    assert {
        "all-minilm-l6-v2",
        "en-core-web-sm",
        "whisper-tiny-en",
        "vader",
        "langid",
        "textrank",
        "intent-clinc150",
        "my-embedder",
    } <= names
    resolve = f"{first_start.url}/v1/registry/resolve"
    assert (
        httpx.get(resolve, params={"ref": "my-embedder"}, headers=first_start.headers).json()[
            "version"
        ]
        == 1
    )
    assert (
        httpx.get(
            resolve, params={"ref": "my-embedder@latest"}, headers=first_start.headers
        ).json()["version"]
        == 2
    )
    history = httpx.get(
        f"{first_start.url}/v1/registry/models/my-embedder/aliases/history",
        headers=first_start.headers,
    )
    assert [e["action"] for e in history.json()["data"]] == ["set", "move", "rollback"]


def test_sdk_example_runs_as_written(first_start: RunningServer) -> None:
    (example,) = blocks("Python SDK", "python")
    script = example.replace("http://127.0.0.1:8000", first_start.url)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=script_env(first_start),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sdk-embedder:1 embedding transformers")
    assert lines[1:] == ["1", "404 alias_not_found"]


# Defaults computed from other settings, described in words.
DERIVED_DEFAULTS = {
    "database_url": "SQLite in the home",
    "artifacts_dir": "$OPENMAAS_HOME/artifacts",
}


def shown_default(value: object) -> str:
    """A default as the Configuration table writes it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(value) or "empty"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "empty"
    if isinstance(value, Path):
        return f"./{value}"
    return str(value) or "empty"


def test_key_commands_run_as_written(first_start: RunningServer) -> None:
    commands = blocks("API keys, projects and limits", "bash")
    assert len(commands) == 2
    outputs = []
    for block in commands:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            env=script_env(first_start),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{block}\n---\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    assert "in project default: admin" in outputs[0]
    assert "created project acme" in outputs[0]
    assert "requests_per_minute=600" in outputs[0]
    keys = httpx.get(f"{first_start.url}/v1/keys", headers=first_start.headers).json()["data"]
    by_name = {key["name"]: key for key in keys}
    assert by_name["acme-app"]["project"] == "acme"
    assert by_name["acme-app"]["expires_at"] is not None
    assert by_name["ci-bot"]["revoked_at"] is not None
    assert by_name["ci-bot"]["limits"] == {"requests_per_minute": 60}


def test_configuration_table_matches_the_settings() -> None:
    documented: dict[str, str] = {}
    rows = re.findall(r"^\| (`OPENMAAS_[^|]+) \| ([^|]+) \|", section("Configuration"), re.M)
    for names, default in rows:
        variables = re.findall(r"`OPENMAAS_(\w+)`", names)
        values = re.findall(r"`([^`]*)`", default) or [default.strip()]
        assert len(values) == len(variables), (names, default)
        documented.update(zip((v.lower() for v in variables), values, strict=True))
    assert set(documented) == set(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        expected = DERIVED_DEFAULTS.get(name) or shown_default(
            field.get_default(call_default_factory=True)
        )
        assert documented[name] == expected, name


def test_error_example_matches_the_server(first_start: RunningServer) -> None:
    (example,) = blocks("HTTP API", "json")
    response = httpx.get(f"{first_start.url}/v1/registry/models/bert", headers=first_start.headers)
    assert response.status_code == 404
    assert response.json() == json.loads(example)


# -- Serving: every curl and Python example, run against the first-start server ----------------

SERVING = "Serving"
LOCAL_ADDRESS = "127.0.0.1:8000"  # where the Python examples point; replaced by the test server's
# What `make serve` registers on every machine (apertium-eng-spa needs Debian packages).
CATALOG = {
    "all-minilm-l6-v2",
    "all-minilm-l6-v2-int8",
    "en-core-web-sm",
    "whisper-tiny-en",
    "vader",
    "langid",
    "textrank",
    "intent-clinc150",
}
ROUTE = re.compile(r"/v[12]/[\w/.-]*\w")
BASH_MODEL = re.compile(r'"model": "([^"]+)"|model=([\w.@:-]+)')
PYTHON_CALL = re.compile(r"client\.([\w.]+)\(")
PYTHON_MODEL = re.compile(r'model="([^"]+)"|infer\("([^"]+)"')
SYSTEM_FILE = re.compile(r"/usr/share/[\w/.-]+")


def _found(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    if match is None:
        return None
    return next((group for group in match.groups() if group), match.group(0))


@dataclass(frozen=True)
class Example:
    """One code block of the Serving section, named by language, route (or client call) and
    model: `bash /v1/classify vader`, `python embeddings.create all-minilm-l6-v2`."""

    language: str
    body: str

    @property
    def name(self) -> str:
        if self.language == "bash":
            route, model = _found(ROUTE, self.body), _found(BASH_MODEL, self.body)
        else:
            route, model = _found(PYTHON_CALL, self.body), _found(PYTHON_MODEL, self.body)
        return " ".join(part for part in (self.language, route, model) if part)


def python_setup() -> str:
    """The section's first Python block builds the `client` the other blocks use."""
    return blocks(SERVING, "python")[0]


def serving_examples() -> list[Example]:
    return [
        Example(language, body)
        for language, body in FENCE.findall(section(SERVING))
        if language in ("bash", "python") and body != python_setup()
    ]


def run_example(example: Example, server: RunningServer) -> str:
    if example.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", example.body]
    else:
        script = example.body if "client = " in example.body else python_setup() + example.body
        address = server.url.removeprefix("http://")
        command = [sys.executable, "-c", script.replace(LOCAL_ADDRESS, address)]
    result = subprocess.run(
        command, env=script_env(server), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{example.body}\n---\n{result.stdout}\n{result.stderr}"
    return result.stdout


def skip_reason(example: Example, server: RunningServer) -> str | None:
    """Examples that need optional Debian packages are skipped on machines without them."""
    for path in SYSTEM_FILE.findall(example.body):
        if not Path(path).exists():
            return f"needs {path} (make system-deps installs the Debian packages)"
    if '"apertium-eng-spa"' in example.body:
        found = httpx.get(f"{server.url}/v1/models/apertium-eng-spa", headers=server.headers)
        if found.status_code == 404:
            return "needs the Debian packages apertium apertium-eng-spa"
    return None


Check = Callable[[str, RunningServer], None]  # (the example's stdout, the server)


def expect(extract: Callable[[str], object], expected: object) -> Check:
    def check(output: str, server: RunningServer) -> None:
        assert extract(output) == expected, output[:2000]

    return check


def data(output: str) -> list[Any]:
    items: list[Any] = json.loads(output)["data"]
    return items


def int8_agrees_with_minilm(output: str, server: RunningServer) -> None:
    int8 = np.asarray(data(output)[0]["embedding"])
    body = {"model": "all-minilm-l6-v2", "input": "The cat sits on the mat."}
    answer = httpx.post(f"{server.url}/v1/embeddings", json=body, headers=server.headers)
    full = np.asarray(answer.json()["data"][0]["embedding"])
    assert int8.shape == full.shape == (384,)
    assert float(int8 @ full / (np.linalg.norm(int8) * np.linalg.norm(full))) > 0.99


def error_matches_the_readme(output: str, server: RunningServer) -> None:
    (shown,) = blocks(SERVING, "json")
    assert json.loads(output) == json.loads(shown)


EXPECTED: dict[str, Check] = {
    "bash /v1/models": expect(lambda out: CATALOG - {m["id"] for m in data(out)}, set()),
    "bash /v1/embeddings all-minilm-l6-v2": expect(
        lambda out: [len(d["embedding"]) for d in data(out)], [384, 384]
    ),
    "python embeddings.create all-minilm-l6-v2": expect(str.strip, "384"),
    "bash /v1/embeddings all-minilm-l6-v2-int8": int8_agrees_with_minilm,
    "python embeddings.create all-minilm-l6-v2-int8": expect(str.strip, "384 9"),
    "bash /v1/classify vader": expect(
        lambda out: [d["label"] for d in data(out)], ["positive", "negative"]
    ),
    "bash /v1/classify langid": expect(
        lambda out: [(d["label"], len(d["labels"])) for d in data(out)], [("fr", 2)]
    ),
    "bash /v1/classify intent-clinc150": expect(
        lambda out: [(d["label"], len(d["labels"])) for d in data(out)], [("weather", 3)]
    ),
    "bash /v1/moderations vader": expect(
        lambda out: [r["flagged"] for r in json.loads(out)["results"]], [True, False]
    ),
    "python moderations.create vader": expect(
        str.strip, "True {'negative': 0.619, 'positive': 0.0}"
    ),
    "bash /v1/ner en-core-web-sm": expect(
        lambda out: [(e["text"], e["label"]) for e in data(out)[0]["entities"]],
        [("Angela Merkel", "PERSON"), ("Paris", "GPE"), ("May", "DATE")],
    ),
    "bash /v1/summarize textrank": expect(
        lambda out: data(out)[0]["text"].splitlines(),
        ["OpenMaaS serves models.", "Models are versioned, and aliases move between versions."],
    ),
    "bash /v1/translate apertium-eng-spa": expect(
        lambda out: "tiempo" in data(out)[0]["text"], True
    ),
    "bash /v1/rerank all-minilm-l6-v2": expect(
        lambda out: [(r["index"], r["document"]["text"]) for r in json.loads(out)["results"]],
        [(1, "Cats often sleep on warm windowsills.")],
    ),
    "bash /v1/audio/transcriptions whisper-tiny-en": expect(
        lambda out: "young man" in json.loads(out)["text"].lower(), True
    ),
    "python audio.transcriptions.create whisper-tiny-en": expect(
        lambda out: "young man" in out.lower(), True
    ),
    "bash /v1/chat/completions my-gpt": expect(
        lambda out: json.loads(out)["choices"][0]["message"]["role"], "assistant"
    ),
    "python chat.completions.create my-gpt": expect(lambda out: "total_tokens=" in out, True),
    # A random tiny GPT-2 stands in: the text is noise, the stream must only complete.
    "python completions.create my-gpt": expect(lambda out: None, None),
    "python infer vader": expect(str.strip, "[b'positive' b'negative']"),
    "python files.create": expect(
        str.splitlines, ["completed 2 0", "review-0 positive", "review-1 negative"]
    ),
    "bash /v1/embeddings vader": error_matches_the_readme,
}


@pytest.fixture(scope="module")
def my_gpt(first_start: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The causal LM the chat examples call `my-gpt`. The README registers GPT-2 from the Hub;
    offline, a tiny random GPT-2 stands in for it."""
    path = build_gpt2(tmp_path_factory.mktemp("my-gpt") / "gpt2")
    with Client(first_start.url, api_key=first_start.key) as sdk:
        sdk.register("my-gpt", PathSource(path=str(path)))
    return "my-gpt"


def test_every_serving_example_has_a_check() -> None:
    names = [example.name for example in serving_examples()]
    assert len(names) == len(set(names)), names
    assert set(names) == set(EXPECTED)


@pytest.mark.parametrize("example", serving_examples(), ids=lambda example: example.name)
def test_serving_example_runs_as_written(
    example: Example, first_start: RunningServer, request: pytest.FixtureRequest
) -> None:
    reason = skip_reason(example, first_start)
    if reason is not None:
        pytest.skip(reason)
    if "my-gpt" in example.body:
        request.getfixturevalue("my_gpt")
    output = run_example(example, first_start)
    EXPECTED[example.name](output, first_start)
