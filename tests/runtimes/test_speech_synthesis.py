"""The speech-synthesis runtimes behind one contract: espeak-ng as the catalog registers it,
and a Piper voice (a tiny ONNX graph with Piper's signature, built here) fed the phoneme ids
Piper would feed it."""

from __future__ import annotations

import json
import shutil
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from openmaas.errors import ModelLoadFailed
from openmaas.registry.detection import detect
from openmaas.registry.intake import walk_directory
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.runtimes.espeak import EspeakRuntime, wav_samples
from openmaas.runtimes.piper import PiperRuntime
from openmaas.tasks.speech_synthesis import MAX_PIECE_CHARS, SpeechParams, speech_pieces
from tests.runtimes.conformance import check_conformance
from tests.runtimes.tiny_voices import (
    AMPLITUDE,
    PHONEME_ID_MAP,
    RATE,
    SAMPLES_PER_ID,
    build_piper_voice,
    ids_heard,
)

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="apt-get install espeak-ng"
)

SourceOpener = Callable[[str], ModelSource]


def piper_source(directory: Path) -> ModelSource:
    return ModelSource.for_directory(directory, task="speech-synthesis", runtime="piper")


def test_espeak_ng_as_the_catalog_registers_it(catalog_source: SourceOpener) -> None:
    source = catalog_source("espeak-ng")
    assert {"en-us", "en-gb", "fr-fr"} <= set(source.params["voices"])
    model = check_conformance(EspeakRuntime(), source)
    audio = model.synthesize(["Bonjour tout le monde."], SpeechParams(voice="fr-fr"))[0]
    assert audio.sample_rate == 22050
    assert 1.0 < audio.seconds < 3.0


def test_espeak_ng_reads_no_option_from_the_text(catalog_source: SourceOpener) -> None:
    model = EspeakRuntime().load(catalog_source("espeak-ng"), LoadOptions())
    (audio,) = model.synthesize(["--version -w /tmp/x.wav"], SpeechParams(voice="en-us"))
    assert audio.seconds > 1.0  # spoken as text
    assert not Path("/tmp/x.wav").exists()


def test_a_wav_without_data_is_refused() -> None:
    with pytest.raises(Exception, match="no WAV audio"):
        wav_samples(b"not a wav")


def test_a_piper_voice_is_detected_with_its_voices(tmp_path: Path) -> None:
    voice = build_piper_voice(tmp_path / "voice", speakers=("alice", "bob"))
    detected = detect(walk_directory(voice))
    assert (detected.task, detected.runtime, detected.format) == (
        "speech-synthesis",
        "piper",
        "piper",
    )
    assert detected.params == {"voices": ["alice", "bob"], "sample_rate": RATE}


def test_a_piper_voice_gets_piper_s_phoneme_ids(tmp_path: Path) -> None:
    model = check_conformance(PiperRuntime(), piper_source(build_piper_voice(tmp_path / "v")))
    assert model.voices == ("tiny",)
    (audio,) = model.synthesize(["Hello, world!"], SpeechParams(voice="tiny"))
    assert audio.sample_rate == RATE
    # Piper: BOS, every phoneme of espeak-ng's IPA (clause punctuation kept, NFD) followed by
    # the pad, EOS.
    phonemes = unicodedata.normalize("NFD", "həlˈoʊ, wˈɜːld!")  # noqa: RUF001 - IPA
    expected = [1, 0]
    for phoneme in phonemes:
        expected += [PHONEME_ID_MAP[phoneme][0], 0]
    expected.append(2)
    assert audio.samples.size == len(expected) * SAMPLES_PER_ID
    assert ids_heard(audio.samples, SAMPLES_PER_ID) == expected
    assert np.abs(audio.samples).max() == pytest.approx(AMPLITUDE, abs=1e-3)


def test_a_piper_voice_of_several_speakers_takes_their_ids(tmp_path: Path) -> None:
    model = PiperRuntime().load(
        piper_source(build_piper_voice(tmp_path / "v", speakers=("alice", "bob"))), LoadOptions()
    )
    assert model.voices == ("alice", "bob")
    alice, bob = (
        model.synthesize(["Hi."], SpeechParams(voice=voice))[0] for voice in ("alice", "bob")
    )
    assert np.abs(alice.samples).max() == pytest.approx(AMPLITUDE, abs=1e-3)  # sid 0
    assert np.abs(bob.samples).max() == pytest.approx(2 * AMPLITUDE, abs=1e-3)  # sid 1
    slow = model.synthesize(["Hi."], SpeechParams(voice="bob", speed=0.5))[0]
    assert slow.samples.size == 2 * bob.samples.size  # the length scale over the speed


def test_a_piper_directory_without_its_config_is_refused(tmp_path: Path) -> None:
    voice = build_piper_voice(tmp_path / "v")
    (voice / "tiny.onnx.json").unlink()
    with pytest.raises(ModelLoadFailed, match=r"voice\.onnx and voice\.onnx\.json"):
        PiperRuntime().load(piper_source(voice), LoadOptions())


def test_texts_are_cut_into_sentences() -> None:
    text = "First one. Second one!  Third?\n\nA list:\n- item"
    assert speech_pieces(text) == ["First one.", "Second one!", "Third?", "A list:", "- item"]
    long = ", ".join(["word " * 10] * 20)
    pieces = speech_pieces(long)
    assert all(len(p) <= MAX_PIECE_CHARS for p in pieces)
    assert " ".join(pieces).split() == long.split()
    assert speech_pieces(" \n ") == []


def test_a_text_voice_maps_the_text_s_own_characters(tmp_path: Path) -> None:
    voice = build_piper_voice(tmp_path / "v")
    config_path = voice / "tiny.onnx.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "phoneme_type": "text"}))
    model = PiperRuntime().load(piper_source(voice), LoadOptions())
    (audio,) = model.synthesize(["bad"], SpeechParams(voice="tiny"))
    letters = [PHONEME_ID_MAP[c][0] for c in "bad"]
    assert ids_heard(audio.samples, SAMPLES_PER_ID) == [
        1,
        0,
        *(i for c in letters for i in (c, 0)),
        2,
    ]
