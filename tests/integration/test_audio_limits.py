"""Audio length is bounded, against a real server over real HTTP: an hour of silence is 641
KiB of FLAC, well under the upload limit, and used to cost 44 s of CPU and 3.25 GiB. It is
refused from its header before decoding; a header that understates the length is caught
while decoding; a short clip still transcribes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.integration import authed
from tests.integration.conftest import RunningServer
from tests.runtimes.audio_files import RATE, silent_audio, understating_flac

pytestmark = pytest.mark.integration

pytest.importorskip("av")

MODEL = "whisper-tiny-en"  # in the catalog the serving server registers
LIMIT_S = 1800  # the default OPENMAAS_MAX_AUDIO_SECONDS


def transcribe(server: RunningServer, audio: bytes, name: str = "clip.flac") -> httpx.Response:
    return authed.post(
        f"{server.url}/v1/audio/transcriptions",
        files={"file": (name, audio, "audio/flac")},
        data={"model": MODEL},
        timeout=300,
    )


def resident_mib(server: RunningServer) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_an_hour_of_audio_is_refused_before_decoding(serving_server: RunningServer) -> None:
    # A short clip first: it loads the model, so memory is then measured on the refusal alone.
    short = transcribe(serving_server, silent_audio(5))
    assert short.status_code == 200, short.text
    hour = silent_audio(3600)
    assert len(hour) < 1 << 20
    before = resident_mib(serving_server)
    started = time.monotonic()
    refused = transcribe(serving_server, hour)
    assert time.monotonic() - started < 5  # was 44 s of CPU
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert error["param"] == "file"
    assert "lasts 3600 s" in error["message"]
    assert f"at most {LIMIT_S} s" in error["message"]
    assert resident_mib(serving_server) - before < 50  # was +3.25 GiB


def test_a_header_that_understates_the_length_is_caught_while_decoding(
    serving_server: RunningServer,
) -> None:
    lying = understating_flac(silent_audio(LIMIT_S + 200), declared_samples=RATE)
    refused = transcribe(serving_server, lying)
    assert refused.status_code == 413, refused.text
    assert f"decodes to more than {LIMIT_S} s" in refused.json()["error"]["message"]


@pytest.mark.parametrize("route", ["transcriptions", "translations"])
def test_both_audio_routes_take_uploads_up_to_the_audio_limit(
    serving_server: RunningServer, route: str
) -> None:
    # 17 MiB: over the 16 MiB every other route takes, under the 25 MiB of audio.
    response = authed.post(
        f"{serving_server.url}/v1/audio/{route}",
        files={"file": ("noise.wav", b"\x01" * (17 << 20), "audio/wav")},
        data={"model": MODEL},
        timeout=120,
    )
    assert response.status_code == 400, response.text  # read, then refused as undecodable
