"""Encryption at rest end to end: real servers on one state directory, started with the key,
without one and with another; `openmaas admin rotate-key` run between them, as an operator
would. Plus every runtime's promise that it has read its files once `load` returns (the pool
deletes decrypted copies right then)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import openai
import pytest

from openmaas import APIError, Client
from openmaas.auth.entities import SYSTEM
from openmaas.catalog.service import CatalogService
from openmaas.crypto import EncryptionKey, peek_header
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.composition import Registry
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime, get_runtime
from tests.conftest import build_registry
from tests.integration.conftest import RunningServer, assert_api_error, start_server, stop_server
from tests.runtimes.conformance import check_conformance
from tests.runtimes.tiny_models import build_bert

pytestmark = pytest.mark.integration

TEXT = "The quick brown fox jumps over the lazy dog."
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openmaas.cli.main", *args],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def new_key_file(path: Path) -> EncryptionKey:
    done = cli("admin", "generate-key", "--output", str(path), env={})
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return EncryptionKey.from_file(path)


def key_env(home: Path, key_file: Path | None) -> dict[str, str]:
    env = {"OPENMAAS_HOME": str(home)}
    if key_file is not None:
        env["OPENMAAS_ENCRYPTION_KEY_FILE"] = str(key_file)
    return env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, npt.NDArray[np.float32]]:
    """A tiny BERT saved with save_pretrained, and its embedding of TEXT loaded from plaintext."""
    directory = build_bert(tmp_path_factory.mktemp("tiny") / "bert")
    source = ModelSource.for_directory(directory, task="embedding", runtime="transformers")
    model = get_runtime("transformers").load(source, LoadOptions())
    expected = model.embed([TEXT])[0]
    model.unload()
    return directory, expected


def plaintext_markers(model: Path) -> list[bytes]:
    weights = (model / "model.safetensors").read_bytes()
    return [
        b'"hidden_size": 32',  # config.json
        b"[MASK]",  # vocab.txt, tokenizer.json
        weights[len(weights) // 2 : len(weights) // 2 + 64],  # raw float32 weights
    ]


def stored_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "artifacts" / "objects").rglob("*") if p.is_file())


def embed(server: RunningServer) -> npt.NDArray[np.float32]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as client:
        vector = client.embeddings.create(model="tiny", input=TEXT).data[0].embedding
    return np.asarray(vector, dtype=np.float32)


def assert_load_refused(server: RunningServer, fragment: str, code: str) -> None:
    with pytest.raises(openai.InternalServerError) as refused:
        embed(server)
    assert refused.value.status_code == 503
    assert "could not be loaded" in str(refused.value)
    assert fragment in str(refused.value)
    with Client(server.url, api_key=server.key) as sdk, pytest.raises(APIError) as verify:
        sdk.verify("tiny", 1)
    assert_api_error(verify, 500, code)
    assert fragment in verify.value.message


@contextmanager
def running(home: Path, key_file: Path | None) -> Iterator[RunningServer]:
    running = start_server(home, key_env(home, key_file))
    try:
        yield running
    finally:
        stop_server(running)


def scratch_leftovers(home: Path) -> list[Path]:
    store = ArtifactStore(home / "artifacts")
    return [p for d in store.scratch_dirs for p in d.glob(f"{store.scratch_prefix}*")]


def test_an_encrypted_store_serves_with_its_key_and_names_any_other(
    tmp_path: Path, tiny: tuple[Path, npt.NDArray[np.float32]]
) -> None:
    model, expected = tiny
    home = tmp_path / "home"
    key = new_key_file(tmp_path / "store.key")
    other = new_key_file(tmp_path / "other.key")

    with running(home, tmp_path / "store.key") as server:
        with Client(server.url, api_key=server.key) as sdk:
            version = sdk.upload("tiny", model, task="embedding")
        assert len(version.files) == 6
        files = stored_files(home)
        assert len(files) == 6
        for path in files:
            content = path.read_bytes()
            assert not any(marker in content for marker in plaintext_markers(model)), path
            header = peek_header(path)
            assert header is not None
            assert header.key_id == key.key_id
        np.testing.assert_allclose(embed(server), expected, atol=1e-5)
        assert scratch_leftovers(home) == []  # the decrypted copy went once loaded
        with Client(server.url, api_key=server.key) as sdk:
            assert sdk.verify("tiny", 1).ok

    with running(home, None) as server:
        assert_load_refused(server, "no encryption key is configured", "encryption_key_missing")
    with running(home, tmp_path / "other.key") as server:
        assert_load_refused(
            server,
            f"encrypted with key id {key.key_id}, but the configured key has id {other.key_id}",
            "encryption_key_mismatch",
        )


def test_rotate_key_encrypts_a_plaintext_store_and_moves_it_to_a_new_key(
    tmp_path: Path, tiny: tuple[Path, npt.NDArray[np.float32]]
) -> None:
    model, expected = tiny
    home = tmp_path / "home"
    first = new_key_file(tmp_path / "first.key")
    second = new_key_file(tmp_path / "second.key")
    with running(home, None) as server, Client(server.url, api_key=server.key) as sdk:
        sdk.upload("tiny", model, task="embedding")
    assert all(peek_header(p) is None for p in stored_files(home))

    encrypt = cli(
        "admin", "rotate-key", "--new-key-file", str(tmp_path / "first.key"),
        env=key_env(home, None),
    )  # fmt: skip
    assert encrypt.returncode == 0, encrypt.stderr
    assert f"6 file(s) rewritten under key id {first.key_id}" in encrypt.stdout
    headers = [peek_header(p) for p in stored_files(home)]
    assert {h.key_id if h else None for h in headers} == {first.key_id}

    rotate = [
        "admin", "rotate-key", "--new-key-file", str(tmp_path / "second.key"), "--json",
    ]  # fmt: skip
    rotated = cli(*rotate, env=key_env(home, tmp_path / "first.key"))
    assert rotated.returncode == 0, rotated.stderr
    assert '"rekeyed": 6' in rotated.stdout
    again = cli(*rotate, env=key_env(home, tmp_path / "first.key"))
    assert again.returncode == 0, again.stderr
    assert '"rekeyed": 0' in again.stdout  # a second run (or a resumed one) has nothing to do
    assert '"unchanged": 6' in again.stdout
    # Every file is now under the second key only (a server holding another key refuses
    # such files: test_an_encrypted_store_serves_with_its_key_and_names_any_other).
    headers = [peek_header(p) for p in stored_files(home)]
    assert {h.key_id if h else None for h in headers} == {second.key_id}

    with running(home, tmp_path / "second.key") as server:
        np.testing.assert_allclose(embed(server), expected, atol=1e-5)


def test_rotate_key_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    neither = cli("admin", "rotate-key", env=key_env(home, None))
    assert neither.returncode == 2
    assert "--new-key-file" in neither.stderr
    (tmp_path / "bad.key").write_text("definitely not a key")
    bad = cli(
        "admin", "rotate-key", "--new-key-file", str(tmp_path / "bad.key"),
        env=key_env(home, None),
    )  # fmt: skip
    assert bad.returncode == 1
    assert "is not base64" in bad.stderr
    assert "definitely" not in bad.stderr
    assert "Traceback" not in bad.stderr
    new_key_file(tmp_path / "good.key")
    nowhere = cli(
        "admin", "rotate-key", "--new-key-file", str(tmp_path / "good.key"),
        env=key_env(home, None),
    )  # fmt: skip
    assert nowhere.returncode == 1
    assert "no artifact store" in nowhere.stderr
    exists = cli("admin", "generate-key", "--output", str(tmp_path / "good.key"), env={})
    assert exists.returncode == 1
    assert "never overwritten" in exists.stderr


def test_a_server_with_a_malformed_key_does_not_start(tmp_path: Path) -> None:
    env = {**key_env(tmp_path / "home", None), "OPENMAAS_ENCRYPTION_KEY": "c2hvcnQ="}
    refused = cli("serve", "--port", "1", env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: OPENMAAS_ENCRYPTION_KEY decodes to 5 bytes, but an AES-256 key is 32 bytes; "
        "create a key with `openmaas admin generate-key`"
    ]


# -- every runtime has read its files when `load` returns ------------------------------------


class DeletesDirectoriesAfterLoad(Runtime):
    """Wraps a runtime; deletes the model's directory (and its dependencies') as soon as its
    `load` returns, exactly as the pool deletes decrypted copies."""

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.tasks = inner.tasks  # type: ignore[misc]

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        return self.inner.estimate_memory_bytes(source)

    def load(self, source: ModelSource, options: LoadOptions) -> LoadedModel:
        assert not self.inner.reads_files_after_load
        model = self.inner.load(source, options)
        shutil.rmtree(source.directory)
        for directory in source.directory.parent.glob("dependency-*"):
            shutil.rmtree(directory)
        return model


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("catalog")
    registry = build_registry(f"sqlite:///{root / 'openmaas.db'}", root / "artifacts")
    CatalogService(registry).register_available()
    yield registry
    registry.db.close()


@pytest.mark.parametrize(
    "name",
    [
        "all-minilm-l6-v2",  # transformers (safetensors: memory-mapped)
        "all-minilm-l6-v2-int8",  # onnx
        "en-core-web-sm",  # spacy
        "whisper-tiny-en",  # ctranslate2
        "vader",  # rules (lexicon files)
        "langid",  # rules (model inside the package)
        "textrank",  # rules
        "intent-clinc150",  # linear-head over MiniLM, opened as a dependency
    ],
)
def test_each_runtime_has_read_its_files_when_load_returns(
    name: str, catalog: Registry, tmp_path: Path
) -> None:
    if name not in {m.name for m in catalog.list_models(caller=SYSTEM)}:
        pytest.skip(f"catalog model {name!r} is not installed on this machine")

    def copy_of(reference: str, label: str) -> ModelSource:
        with catalog.open_files(reference, caller=SYSTEM) as opened:
            directory = tmp_path / label
            shutil.copytree(opened.directory, directory)
            return ModelSource.from_version(opened.version, directory)

    def open_dependency(reference: str) -> ModelSource:
        return copy_of(reference, f"dependency-{reference.replace(':', '-')}")

    source = copy_of(name, "model")
    clips = sorted(LIBRIVOX.glob("*.wav")) if LIBRIVOX.is_dir() else []
    audio = clips[0].read_bytes() if clips else None
    if source.task == "speech-recognition" and audio is None:
        pytest.skip("the Debian package pocketsphinx-testdata is not installed")
    runtime = DeletesDirectoriesAfterLoad(get_runtime(source.runtime))
    model = check_conformance(
        runtime, source, LoadOptions(open_dependency=open_dependency), audio=audio
    )
    assert list(tmp_path.iterdir()) == []  # everything ran with the files gone
    model.unload()
