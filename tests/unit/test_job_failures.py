"""What a tenant reads of a failed job, and what a worker process inherits (issue 13)."""

from __future__ import annotations

import stat
from pathlib import Path

from pydantic import SecretStr

from openmaas.errors import ArtifactCorrupted
from openmaas.jobs.failures import public_message
from openmaas.jobs.worker_env import remove_worker_key, worker_environment, worker_key_path
from openmaas.settings import Settings


def test_a_failure_is_one_line_without_server_paths() -> None:
    missing = FileNotFoundError(2, "No such file or directory", "/srv/om/training/jobs/x/v.json")
    assert public_message(missing) == (
        "FileNotFoundError: [Errno 2] No such file or directory: '<server path>'"
    )
    assert public_message(RuntimeError("boom at step 4\n  File '/usr/lib/x.py'")) == (
        "RuntimeError: boom at step 4"
    )
    # Relative paths (a model's own files) say nothing of the server and stay.
    assert public_message(ArtifactCorrupted("m:1: file 'onnx/model.onnx' failed")) == (
        "m:1: file 'onnx/model.onnx' failed"
    )
    assert public_message(ValueError(r"C:\Users\om\x.bin and ~/models/a/b")) == (
        "ValueError: <server path> and <server path>"
    )
    assert len(public_message(RuntimeError("x" * 10_000))) <= 520


def test_database_errors_are_named_by_type_only() -> None:
    from sqlalchemy.exc import OperationalError

    error = OperationalError("SELECT secret FROM jobs", {}, Exception("db at 10.0.0.5"))
    message = public_message(error)
    assert message.startswith("OperationalError: an internal error")
    assert "SELECT" not in message
    assert "10.0.0.5" not in message


def test_a_worker_inherits_no_secret_and_gets_the_key_in_a_private_file(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        admin_key=SecretStr("om-admin000_secret"),
        key_pepper=SecretStr("p" * 32),
        encryption_key=SecretStr("a2V5" * 11),
    )
    inherited = {
        "OPENMAAS_ADMIN_KEY": "om-admin000_secret",
        "openmaas_key_pepper": "p" * 32,  # pydantic-settings matches names in any case
        "OPENMAAS_ENCRYPTION_KEY": "a2V5" * 11,
        "OPENMAAS_LOG_LEVEL": "debug",
        "PATH": "/usr/bin",
    }
    env = worker_environment(settings, inherited)
    assert env["OPENMAAS_LOG_LEVEL"] == "debug"
    assert env["PATH"] == "/usr/bin"
    values = "\0".join(env.values())
    assert "om-admin000_secret" not in values
    assert "p" * 32 not in values
    assert "a2V5" * 11 not in values
    key_file = Path(env["OPENMAAS_ENCRYPTION_KEY_FILE"])
    assert key_file == worker_key_path(settings)
    assert key_file.read_text().strip() == "a2V5" * 11
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    remove_worker_key(settings)
    assert not key_file.exists()


def test_a_configured_key_file_is_passed_on_as_it_is(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    settings = Settings(home=tmp_path / "home", encryption_key_file=key_file)
    env = worker_environment(settings, {})
    assert env["OPENMAAS_ENCRYPTION_KEY_FILE"] == str(key_file)
    assert not worker_key_path(settings).exists()
