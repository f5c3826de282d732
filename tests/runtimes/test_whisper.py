"""The faster-whisper runtime on Whisper tiny.en and the LibriVox clips of the Debian package
pocketsphinx-testdata (read speech with reference transcripts)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from openmaas.errors import InvalidRequest, UnsupportedLanguage, WrongTask
from openmaas.runtimes.base import ModelSource
from openmaas.runtimes.whisper import WhisperModel, WhisperRuntime, decode_audio_bytes
from openmaas.tasks.speech_recognition import Transcription, TranscriptionParams
from tests.runtimes.conformance import check_conformance

SourceOpener = Callable[[str], ModelSource]

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
MAX_WORD_ERROR_RATE = 0.2  # tiny.en scores about 0.05 on these clips
# Spellings that differ between the transcripts and Whisper without being errors.
SPELLINGS = {"mr": "mister", "mrs": "missus"}


def normalize(text: str) -> list[str]:
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [SPELLINGS.get(w, w) for w in words]


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def test_word_errors_count_edits() -> None:
    assert word_errors(["a", "b", "c"], ["a", "b", "c"]) == 0
    assert word_errors(["a", "b", "c"], ["a", "x", "c", "d"]) == 2
    assert word_errors([], ["a"]) == 1
    assert normalize("Mr. John's ill-disposed!") == ["mister", "john's", "ill", "disposed"]


def references() -> dict[str, str]:
    """Clip id -> reference text, from the package's `transcription` file."""
    listing = LIBRIVOX / "transcription"
    if not listing.is_file():
        pytest.skip("the Debian package pocketsphinx-testdata is not installed")
    found = {}
    for line in listing.read_text().splitlines():
        match = re.fullmatch(r"<s> (.*) </s> \((.+)\)", line.strip())
        if match:
            found[match.group(2)] = match.group(1)
    return found


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    return {clip: (LIBRIVOX / f"{clip}.wav").read_bytes() for clip in sorted(references())}


@pytest.fixture(scope="module")
def whisper(catalog_source: SourceOpener, clips: dict[str, bytes]) -> WhisperModel:
    first = next(iter(clips.values()))
    model = check_conformance(WhisperRuntime(), catalog_source("whisper-tiny-en"), audio=first)
    assert isinstance(model, WhisperModel)
    return model


@pytest.fixture(scope="module")
def transcripts(whisper: WhisperModel, clips: dict[str, bytes]) -> dict[str, Transcription]:
    return {clip: whisper.transcribe(audio, TranscriptionParams()) for clip, audio in clips.items()}


def test_tiny_en_transcribes_librivox_below_the_error_budget(
    transcripts: dict[str, Transcription],
) -> None:
    expected = references()
    errors = sum(
        word_errors(normalize(expected[clip]), normalize(t.text)) for clip, t in transcripts.items()
    )
    total = sum(len(normalize(expected[clip])) for clip in transcripts)
    assert errors / total < MAX_WORD_ERROR_RATE, {c: t.text for c, t in transcripts.items()}


def test_transcriptions_carry_language_duration_and_segments(
    transcripts: dict[str, Transcription], clips: dict[str, bytes]
) -> None:
    for clip, result in transcripts.items():
        assert result.language == "en"  # the catalog's default for this English-only model
        samples = decode_audio_bytes(clips[clip])
        assert result.duration_seconds == pytest.approx(len(samples) / 16_000, abs=0.05)
        assert result.segments
        for segment in result.segments:
            assert 0 <= segment.start < segment.end <= result.duration_seconds + 0.5
        assert result.text == " ".join(s.text for s in result.segments)


def _encode(samples: npt.NDArray[np.float32], container: str, codec: str) -> bytes:
    """Samples re-encoded in memory with PyAV (faster-whisper's own decoder library)."""
    import av

    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None, :]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=16_000, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.rate = 16_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            output.mux(packet)
    return buffer.getvalue()


def test_flac_and_mp3_are_decoded_in_memory(
    whisper: WhisperModel, clips: dict[str, bytes], transcripts: dict[str, Transcription]
) -> None:
    clip = sorted(clips)[1]
    samples = decode_audio_bytes(clips[clip])
    flac = _encode(samples, "flac", "flac")
    assert flac.startswith(b"fLaC")
    # Lossless: the same samples, so the same words.
    assert whisper.transcribe(flac, TranscriptionParams()).text == transcripts[clip].text
    mp3 = _encode(samples, "mp3", "libmp3lame")
    heard = normalize(whisper.transcribe(mp3, TranscriptionParams()).text)
    expected = normalize(references()[clip])
    assert word_errors(expected, heard) / len(expected) < 0.35, heard


def test_undecodable_audio_is_a_client_error_naming_the_formats(whisper: WhisperModel) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    for garbage in (b"", b"definitely not audio" * 50, png):
        with pytest.raises(InvalidRequest, match="WAV, FLAC, MP3"):
            whisper.transcribe(garbage, TranscriptionParams())


def test_languages_are_checked_and_prompts_accepted(
    whisper: WhisperModel, clips: dict[str, bytes]
) -> None:
    audio = clips[sorted(clips)[-1]]
    with pytest.raises(UnsupportedLanguage, match="'fr'"):
        whisper.transcribe(audio, TranscriptionParams(language="fr"))
    prompted = whisper.transcribe(
        audio, TranscriptionParams(language="en-US", prompt="Mr. Dashwood, amiable.")
    )
    assert "amiable" in prompted.text.lower()
    with pytest.raises(WrongTask):
        whisper.classify(["x"])
