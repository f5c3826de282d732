"""The README's examples, executed as written against the README's own server: `make serve`
in a fresh clone (a copy of this working tree) with nothing set, on its first start.

Every test server elsewhere gets an absolute home and settings of its own; a reader's gets
neither, and `vader` once failed only there (issue 17). The README's examples run here as
written, in the clone's directory, with what the README tells a reader to export
(`OPENMAAS_API_KEY`, read as the Quickstart says, and `OPENMAAS_URL`); those that need what a
fresh server lacks say why they are skipped or what stands in.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
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
from tests.integration.conftest import RunningServer, free_port
from tests.runtimes.tiny_models import build_gpt2

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
# The first start registers the catalog (hashing a few hundred MB) before it answers.
FIRST_START_TIMEOUT_S = 180.0
VENV_BIN = Path(sys.executable).parent  # the virtualenv running the tests


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(title: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(section(title)) if lang == language]


def copy_working_tree(clone: Path) -> None:
    """What a clone of this working tree holds: tracked files and untracked ones git does not
    ignore (so no .venv, no state, no caches)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not there
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)  # with its time: older than the install stamp


def reuse_the_installed_virtualenv(clone: Path) -> None:
    """`make serve` installs into `.venv` unless its stamp is newer than pyproject.toml. The
    clone's `.venv` is the tests' own virtualenv (its bin directory, linked) with a fresh stamp,
    so `make serve` finds it installed and runs the README's serve command as written, instead
    of spending minutes installing torch again; `source .venv/bin/activate` works as written."""
    venv = clone / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(VENV_BIN, target_is_directory=True)
    (venv / ".installed").touch()
    # The console's built assets (not committed) come along as installed too: `make install`
    # would otherwise run npm in the clone.
    built = ROOT / "src/openmaas/api/ui/static/vendor"
    if built.is_dir():
        shutil.copytree(built, clone / "src/openmaas/api/ui/static/vendor", dirs_exist_ok=True)
    # `make -q` runs nothing: exit 0 means there is nothing to install. Anything else would
    # reinstall the package into the tests' own virtualenv, from the clone: refuse instead.
    assert subprocess.run(["make", "-q", "install"], cwd=clone, timeout=60).returncode == 0


def readers_env(clone: Path) -> dict[str, str]:
    """A reader's environment: no OPENMAAS_* variable (nor make's HOST and PORT). PYTHONPATH
    is the clone's sources: the virtualenv's editable install points at the checkout it was
    installed from (the one the tests run from), and the clone must run its own code."""
    inherited = {"HOST", "PORT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONPATH", "VIRTUAL_ENV"}
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("OPENMAAS_") and name not in inherited
    }
    return {**env, "PYTHONPATH": str(clone / "src")}


def admin_key_as_the_readme_says(clone: Path) -> str:
    """The key the first start wrote, read by the command the Quickstart gives
    (`$(cat .openmaas/secrets/admin-key)`), in the clone's directory."""
    console = blocks("Quickstart (5 minutes)", "console")
    (export,) = [block for block in console if "export OPENMAAS_API_KEY" in block]
    command = re.search(r"\(or: (\$\(cat [^)]+\))\)", export)
    assert command is not None, export
    read = subprocess.run(
        ["bash", "-c", f"echo {command.group(1)}"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return read.stdout.strip()


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + FIRST_START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"make serve exited with {process.returncode}; see {log}"
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"make serve was not ready in {FIRST_START_TIMEOUT_S:.0f} s; see {log}")


def stop_make_serve(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to make and the server it runs (their own process group); the server stops
    its training worker on the way out."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 30
    with contextlib.suppress(ProcessLookupError):  # raised once the whole group has exited
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)


def script_env(server: RunningServer) -> dict[str, str]:
    """A shell like the reader's after the Quickstart: the virtualenv active (the first
    Quickstart block activates it itself), the key exported; `OPENMAAS_URL` exported too, as
    the README says for a server on another port."""
    return {
        **readers_env(server.home.parent),
        "OPENMAAS_URL": server.url,
        "OPENMAAS_API_KEY": server.key,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
    }


def run_as_written(command: list[str], server: RunningServer) -> subprocess.CompletedProcess[str]:
    """A README example, run in the clone's directory as a reader would."""
    return subprocess.run(
        command,
        cwd=server.home.parent,
        env=script_env(server),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def first_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`make serve` in a fresh clone with nothing set: the default home `./.openmaas` (a
    relative path), the catalog registered, a training worker, a generated admin key. On a
    port of its own, as the README says (`make serve PORT=…`): 8000 may be taken."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to clone")
    if shutil.which("make") is None or not (VENV_BIN / "activate").is_file():
        pytest.skip("needs make, and the tests running in a virtualenv (make install)")
    clone = tmp_path_factory.mktemp("fresh-clone") / "openmaas"
    copy_working_tree(clone)
    reuse_the_installed_virtualenv(clone)
    port = free_port()
    log = clone.parent / "make-serve.log"
    with log.open("wb") as output:  # not a terminal: the key goes to a file in the home
        process = subprocess.Popen(
            ["make", "serve", f"PORT={port}"],
            cwd=clone,
            env=readers_env(clone),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log)
        key = admin_key_as_the_readme_says(clone)
        assert key.startswith("om-"), f"no admin key in the home; see {log}"
        env = {**readers_env(clone), "OPENMAAS_API_KEY": key}
        yield RunningServer(
            url=url, home=clone / ".openmaas", env=env, process=process, key=key, log=log
        )
    finally:
        stop_make_serve(process)


# Where the README's shell and Python examples are, and the test that runs each section's.
RUN_AS_WRITTEN = {
    ("Quickstart (5 minutes)", "bash"): "test_quickstart_commands_run_as_written",
    ("Serving", "bash"): "test_serving_example_runs_as_written",
    ("Serving", "python"): "test_serving_example_runs_as_written",
    ("API keys, projects and limits", "bash"): "test_key_commands_run_as_written",
    ("Python SDK", "python"): "test_sdk_example_runs_as_written",
}
NOT_RUN = {
    ("The two commands", "bash"): "`make serve` is what the first_start fixture runs (as "
    "`make serve PORT=…`, which the README gives for another port); `make test` is this suite",
}


def test_every_shell_and_python_example_is_run() -> None:
    for part in README.read_text().split("\n## ")[1:]:
        title = part.splitlines()[0]
        for language, _ in FENCE.findall(part):
            if language in ("bash", "python"):
                assert (title, language) in RUN_AS_WRITTEN.keys() | NOT_RUN.keys(), (
                    title,
                    language,
                )


def test_quickstart_commands_run_as_written(first_start: RunningServer) -> None:
    commands = blocks("Quickstart (5 minutes)", "bash")
    assert len(commands) == 3
    for block in commands:  # the first one activates the virtualenv, as a reader does
        result = run_as_written(["bash", "-euo", "pipefail", "-c", block], first_start)
        assert result.returncode == 0, f"{block}\n---\n{result.stdout}\n{result.stderr}"

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
    result = run_as_written([sys.executable, "-c", example], first_start)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sdk-embedder:1 embedding transformers")
    assert lines[1:] == ["1", "404 alias_not_found"]


# Defaults computed from other settings, described in words.
DERIVED_DEFAULTS = {
    "database_url": "SQLite in the home",
    "artifacts_dir": "$OPENMAAS_HOME/artifacts",
    "artifact_cache_dir": "$OPENMAAS_HOME/artifact-cache",
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
        result = run_as_written(["bash", "-euo", "pipefail", "-c", block], first_start)
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
        # As written: the examples find the server through OPENMAAS_URL.
        script = example.body if "client = " in example.body else python_setup() + example.body
        command = [sys.executable, "-c", script]
    result = run_as_written(command, server)
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
    if '"espeak-ng"' in example.body:
        found = httpx.get(f"{server.url}/v1/models/espeak-ng", headers=server.headers)
        if found.status_code == 404:
            return "needs the Debian package espeak-ng"
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


def speech_file(name: str, codec: str) -> Check:
    """The example wrote `name` in the reader's directory: audio of `codec`, seconds long."""

    def check(output: str, server: RunningServer) -> None:
        import av

        with av.open(str(server.home.parent / name)) as container:
            stream = container.streams.audio[0]
            seconds = sum(f.samples for f in container.decode(stream)) / stream.rate
            assert stream.codec_context.name == codec
        assert seconds > 2.0

    return check


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
    "bash /v1/models/vader": expect(
        lambda out: [
            json.loads(out)["labels"][int(np.argmax(p))] for p in json.loads(out)["predictions"]
        ],
        ["positive", "negative"],
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
    "bash /v1/audio/speech espeak-ng": speech_file("hello.wav", "pcm_s16le"),
    "python audio.speech.with_streaming_response.create espeak-ng": speech_file(
        "speech.mp3", "mp3float"
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
