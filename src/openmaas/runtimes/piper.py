"""Neural speech synthesis with Piper voices (VITS exported to ONNX): a voice is its `.onnx`
graph and Piper's JSON config beside it (`voice.onnx.json`, or `config.json`).

Text becomes phonemes as Piper makes them: espeak-ng's IPA (`espeak-ng -q --ipa`, in the
config's `espeak.voice`), one line per clause, each followed by the clause's punctuation,
decomposed (NFD) into characters; each phoneme maps to its ids in `phoneme_id_map`, with the
pad `_` after every phoneme, between `^` and `$`. The graph takes `input` (int64 [1, T]),
`input_lengths` (int64 [1]), `scales` (float [3]: noise, length, noise width) and, for a voice
of several speakers, `sid` (int64 [1]); its first output is the audio, float in [-1, 1].

A voice whose `phoneme_type` is "text" maps the text's own characters instead.

Voices: the config's `speaker_id_map` names when it has several speakers, else one voice named
after its `dataset` ("default" when it names none). Speed divides the length scale.

Example::

    model = PiperRuntime().load(ModelSource.for_directory(path, task="speech-synthesis",
                                                          runtime="piper"), LoadOptions())
    model.voices  # -> ("lessac",)
    model.synthesize(["Hello world."], SpeechParams(voice="lessac"))[0].sample_rate  # 22050
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from openmaas.errors import ModelLoadFailed, OpenMaaSError
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime
from openmaas.tasks.names import Task
from openmaas.tasks.speech_synthesis import SpeechAudio, SpeechParams

PAD, BOS, EOS = "_", "^", "$"  # Piper's special phonemes
ESPEAK = "espeak-ng"
ESPEAK_TIMEOUT_S = 30.0
_CLAUSE_PUNCTUATION = re.compile(r"[.,;:!?]")
_LANGUAGE_FLAG = re.compile(r"\([^)]*\)")  # espeak-ng's "(en)" language switches
# Piper's own defaults, when the config has no `inference` block.
DEFAULT_SCALES = {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8}
REQUIRED_INPUTS = frozenset({"input", "input_lengths", "scales"})


def find_piper_config(files: Mapping[str, Path]) -> tuple[str, dict[str, Any]] | None:
    """(path, parsed config) of the Piper config among a version's top-level files: a JSON
    with a `phoneme_id_map` (`<voice>.onnx.json` first, then `config.json`)."""
    candidates = sorted(
        (name for name in files if "/" not in name and name.endswith(".json")),
        key=lambda name: (not name.endswith(".onnx.json"), name != "config.json", name),
    )
    for name in candidates:
        try:
            config = json.loads(files[name].read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(config, dict) and isinstance(config.get("phoneme_id_map"), dict):
            return name, config
    return None


def piper_voices(config: Mapping[str, Any]) -> tuple[str, ...]:
    speakers = config.get("speaker_id_map") or {}
    if int(config.get("num_speakers") or 1) > 1 and isinstance(speakers, dict) and speakers:
        return tuple(name for name, _ in sorted(speakers.items(), key=lambda item: item[1]))
    return (str(config.get("dataset") or "default"),)


def piper_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """What registration records from a Piper config (GET /v1/models lists the voices)."""
    return {
        "voices": list(piper_voices(config)),
        "sample_rate": int((config.get("audio") or {}).get("sample_rate") or 22050),
    }


class PiperRuntime(Runtime):
    """Piper voices: an .onnx graph and its JSON config, run with onnxruntime."""

    name = "piper"
    tasks = frozenset({Task.SPEECH_SYNTHESIS})

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        # The graph's weights plus onnxruntime's arena for one sentence's activations.
        return 2 * super().estimate_memory_bytes(source) + 32 * 1024 * 1024

    def load(self, source: ModelSource, options: LoadOptions) -> PiperModel:
        return PiperModel(source, options, memory_bytes=self.estimate_memory_bytes(source))


class PiperModel(LoadedModel):
    def __init__(self, source: ModelSource, options: LoadOptions, *, memory_bytes: int) -> None:
        import onnxruntime as ort

        self.source = source
        self.tasks = frozenset({Task.SPEECH_SYNTHESIS})
        self.memory_bytes = memory_bytes
        files = {p.name: p for p in source.directory.iterdir() if p.is_file()}
        found = find_piper_config(files)
        graphs = sorted(name for name in files if name.endswith(".onnx"))
        if found is None or not graphs:
            raise ModelLoadFailed(
                f"{source.label}: a Piper voice is an .onnx file and its JSON config (with "
                "phoneme_id_map), e.g. voice.onnx and voice.onnx.json"
            )
        config_name, config = found
        graph = config_name.removesuffix(".json") if config_name.endswith(".onnx.json") else ""
        self._graph = files[graph] if graph in files else files[graphs[0]]
        command = shutil.which(ESPEAK)
        if command is None:
            raise ModelLoadFailed(
                f"{source.label}: Piper voices need espeak-ng for phonemes "
                "(apt-get install espeak-ng)"
            )
        self._espeak = command
        self._espeak_voice = str((config.get("espeak") or {}).get("voice") or "en-us")
        # "text" voices map the text's own characters; "espeak" (the default) its phonemes.
        self._phonemes_are_text = config.get("phoneme_type") == "text"
        self._ids = {str(k): [int(i) for i in v] for k, v in config["phoneme_id_map"].items()}
        missing = [p for p in (PAD, BOS, EOS) if p not in self._ids]
        if missing:
            raise ModelLoadFailed(f"{source.label}: phoneme_id_map lacks {', '.join(missing)}")
        inference = {**DEFAULT_SCALES, **(config.get("inference") or {})}
        self._scales = (
            float(inference["noise_scale"]),
            float(inference["length_scale"]),
            float(inference["noise_w"]),
        )
        self.sample_rate = int((config.get("audio") or {}).get("sample_rate") or 22050)
        self.voices = piper_voices(config)
        speakers = config.get("speaker_id_map") or {}
        self._speaker_ids = {str(k): int(v) for k, v in speakers.items()}
        settings = ort.SessionOptions()
        if options.threads:
            settings.intra_op_num_threads = options.threads
        try:
            self._session: Any = ort.InferenceSession(
                str(self._graph), settings, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadFailed(f"{source.label}: onnxruntime cannot load it: {exc}") from exc
        inputs = {i.name for i in self._session.get_inputs()}
        if not REQUIRED_INPUTS.issubset(inputs):
            raise ModelLoadFailed(
                f"{source.label}: a Piper graph takes input, input_lengths and scales; this "
                f"one takes {', '.join(sorted(inputs))}"
            )
        self._takes_speaker = "sid" in inputs

    def synthesize(self, texts: Sequence[str], params: SpeechParams) -> list[SpeechAudio]:
        return [self._speak(text, params) for text in texts]

    def _speak(self, text: str, params: SpeechParams) -> SpeechAudio:
        phonemes = (
            list(unicodedata.normalize("NFD", text))
            if self._phonemes_are_text
            else self.phonemes(text)
        )
        ids = phoneme_ids(phonemes, self._ids)
        noise, length, width = self._scales
        feed: dict[str, Any] = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([noise, length / params.speed, width], dtype=np.float32),
        }
        if self._takes_speaker:
            feed["sid"] = np.asarray([self._speaker_ids.get(params.voice, 0)], dtype=np.int64)
        audio = self._session.run(None, feed)[0]
        samples: npt.NDArray[np.float32] = np.clip(
            np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0
        )
        return SpeechAudio(samples, self.sample_rate)

    def phonemes(self, text: str) -> list[str]:
        """Piper's phonemes for `text`: espeak-ng's IPA per clause, each clause followed by
        its punctuation (when espeak-ng's clauses line up with the text's), as characters."""
        try:
            done = subprocess.run(
                [self._espeak, "-q", "--ipa", "-b", "1", "-v", self._espeak_voice],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise OpenMaaSError(
                f"espeak-ng did not finish within {ESPEAK_TIMEOUT_S:.0f} s"
            ) from exc
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip()[:300]
            raise OpenMaaSError(f"espeak-ng failed: {message}")
        clauses = [
            _LANGUAGE_FLAG.sub("", line).strip()
            for line in done.stdout.decode("utf-8", "replace").splitlines()
        ]
        clauses = [c for c in clauses if c]
        marks = _CLAUSE_PUNCTUATION.findall(text)
        if len(marks) != len(clauses):
            marks = [","] * (len(clauses) - 1) + ["."]  # clauses espeak-ng cut on its own
        joined = " ".join(f"{clause}{mark}" for clause, mark in zip(clauses, marks, strict=False))
        return list(unicodedata.normalize("NFD", joined))


def phoneme_ids(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]) -> list[int]:
    """Piper's ids: BOS, then every known phoneme followed by the pad, then EOS (phonemes the
    voice does not know are skipped, as Piper skips them)."""
    ids = [*id_map[BOS], *id_map[PAD]]
    for phoneme in phonemes:
        if phoneme in id_map:
            ids += [*id_map[phoneme], *id_map[PAD]]
    ids += id_map[EOS]
    return ids
