"""Audio decoding is bounded in length: by the container's declared duration before decoding,
and by the decoded samples for a header that lies."""

from __future__ import annotations

import pytest

from openmaas.errors import InvalidRequest, PayloadTooLarge
from openmaas.runtimes.audio import decode_audio_bytes
from tests.runtimes.audio_files import RATE, silent_audio, understating_flac

pytest.importorskip("av")


@pytest.fixture(scope="module")
def hour_of_silence() -> bytes:
    return silent_audio(3600)


def test_an_hour_declared_by_the_header_is_refused_before_decoding(
    hour_of_silence: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(hour_of_silence) < 1 << 20  # 641 KiB
    import openmaas.runtimes.audio as audio

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded although the header declares too much")

    monkeypatch.setattr(audio, "_decode", no_decoding)
    with pytest.raises(PayloadTooLarge) as refused:
        decode_audio_bytes(hour_of_silence, max_seconds=1800)
    assert refused.value.status_code == 413
    assert "lasts 3600 s" in refused.value.message
    assert "at most 1800 s" in refused.value.message
    assert "OPENMAAS_MAX_AUDIO_SECONDS" in refused.value.message


def test_a_header_that_understates_the_length_is_caught_while_decoding() -> None:
    lying = understating_flac(silent_audio(120), declared_samples=RATE)  # says 1 s
    with pytest.raises(PayloadTooLarge, match="decodes to more than 60 s"):
        decode_audio_bytes(lying, max_seconds=60)
    assert decode_audio_bytes(lying).size == 120 * RATE  # without a limit: all of it


def test_audio_within_the_limit_is_decoded_whole() -> None:
    samples = decode_audio_bytes(silent_audio(60), max_seconds=60)
    assert samples.size == 60 * RATE
    assert decode_audio_bytes(silent_audio(5, container="wav", codec="pcm_s16le")).size == 5 * RATE


def test_files_that_are_not_audio_are_a_400() -> None:
    with pytest.raises(InvalidRequest, match="could not decode"):
        decode_audio_bytes(b"not audio at all", max_seconds=60)
    with pytest.raises(InvalidRequest, match="empty"):
        decode_audio_bytes(b"", max_seconds=60)
