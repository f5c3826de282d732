"""The first admin key is printed on a terminal only; elsewhere it goes to a 0600 file."""

from __future__ import annotations

import io
import logging
import stat
from pathlib import Path

import pytest

from openmaas.auth.bootstrap import ADMIN_KEY_FILE, announce_admin_key
from openmaas.settings import Settings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_the_key_and_no_file_is_written(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    out = Terminal()
    announce_admin_key("om-abcdefgh_secret", settings, out)
    assert "om-abcdefgh_secret" in out.getvalue()
    assert not (tmp_path / ADMIN_KEY_FILE).exists()


def test_a_log_stream_gets_only_the_file_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(home=tmp_path)
    out = io.StringIO()  # a file or a pipe: what a log collector reads
    with caplog.at_level(logging.WARNING):
        announce_admin_key("om-abcdefgh_secret", settings, out)
    assert out.getvalue() == ""
    path = tmp_path / ADMIN_KEY_FILE
    assert path.read_text() == "om-abcdefgh_secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text
    assert "secret" not in caplog.text.replace("secrets", "")


def test_an_older_file_is_replaced_and_narrowed_to_0600(tmp_path: Path) -> None:
    path = tmp_path / ADMIN_KEY_FILE
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)
    announce_admin_key("om-abcdefgh_new", Settings(home=tmp_path), io.StringIO())
    assert path.read_text() == "om-abcdefgh_new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
