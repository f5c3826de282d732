"""Speech synthesis with espeak-ng (Debian `espeak-ng`): formant voices for about 100
languages, no weights. Each text is one `espeak-ng` process, run with an argument list (no
shell) and the text on stdin, so nothing in the text is read as an option or a file name.

The voices are the languages `espeak-ng --voices` lists (en-us, en-gb, fr-fr, ...), limited to
the version's `voices` param when it has one. Speed maps onto espeak-ng's words per minute
(175 at 1.0); below its slowest, 80, the audio is slowed further by FFmpeg's `atempo`.

Example::

    model = EspeakRuntime().load(source, LoadOptions())
    audio = model.synthesize(["Hello world."], SpeechParams(voice="en-us"))[0]
    audio.sample_rate, audio.seconds  # -> (22050, 0.9...)
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from openmaas.errors import ModelLoadFailed, OpenMaaSError
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime
from openmaas.tasks.names import Task
from openmaas.tasks.speech_synthesis import SpeechAudio, SpeechParams

COMMAND = "espeak-ng"
WORDS_PER_MINUTE = 175  # espeak-ng's default pace: speed 1.0
MIN_WORDS_PER_MINUTE = 80  # espeak-ng speaks no slower than this
TIMEOUT_S = 30.0  # per text; a piece of 400 characters takes well under a second
MEMORY_BYTES = 8 * 1024 * 1024  # one process at a time, its data files mapped


class EspeakRuntime(Runtime):
    """espeak-ng voices; the version's directory holds only its spec."""

    name = "espeak-ng"
    tasks = frozenset({Task.SPEECH_SYNTHESIS})

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        return MEMORY_BYTES

    def load(self, source: ModelSource, options: LoadOptions) -> EspeakModel:
        return EspeakModel(source)


class EspeakModel(LoadedModel):
    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.tasks = frozenset({Task.SPEECH_SYNTHESIS})
        self.memory_bytes = MEMORY_BYTES
        command = shutil.which(COMMAND)
        if command is None:
            raise ModelLoadFailed(
                f"{source.label}: the espeak-ng command is not installed on the server "
                "(apt-get install espeak-ng)"
            )
        self._command = command
        installed = installed_voices(command)
        declared = [str(v) for v in source.params.get("voices") or []]
        self.voices = tuple(v for v in declared if v in installed) if declared else installed
        if not self.voices:
            raise ModelLoadFailed(f"{source.label}: none of its espeak-ng voices is installed")

    def synthesize(self, texts: Sequence[str], params: SpeechParams) -> list[SpeechAudio]:
        return [self._speak(text, params) for text in texts]

    def _speak(self, text: str, params: SpeechParams) -> SpeechAudio:
        pace = round(WORDS_PER_MINUTE * params.speed)
        wav = speak(self._command, text, params.voice, max(pace, MIN_WORDS_PER_MINUTE))
        audio = wav_samples(wav)
        if pace < MIN_WORDS_PER_MINUTE:
            slowed = slow_down(audio.samples, audio.sample_rate, pace / MIN_WORDS_PER_MINUTE)
            audio = SpeechAudio(slowed, audio.sample_rate)
        return audio


def speak(command: str, text: str, voice: str, words_per_minute: int) -> bytes:
    """espeak-ng's WAV for `text` (UTF-8 on stdin)."""
    try:
        done = subprocess.run(
            [command, "-v", voice, "-s", str(words_per_minute), "-b", "1", "--stdout"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OpenMaaSError(f"espeak-ng did not finish within {TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise OpenMaaSError(f"espeak-ng failed: {message}")
    return done.stdout


def installed_voices(command: str = COMMAND) -> tuple[str, ...]:
    """The language voices `espeak-ng --voices` lists (its second column), in its order."""
    try:
        listed = subprocess.run(
            [command, "--voices"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    voices: dict[str, None] = {}
    for line in listed.splitlines()[1:]:  # the first line is the header
        fields = line.split()
        if len(fields) >= 2:
            voices[fields[1]] = None
    return tuple(voices)


def wav_samples(wav: bytes) -> SpeechAudio:
    """16-bit PCM WAV to float samples. espeak-ng writes its header before it knows the
    length (sizes 0x7fffffff), so the data chunk runs to the end of the output."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise OpenMaaSError("espeak-ng wrote no WAV audio")
    position, rate, channels, bits = 12, 0, 1, 16
    while position + 8 <= len(wav):
        chunk, size = (
            wav[position : position + 4],
            struct.unpack("<I", wav[position + 4 : position + 8])[0],
        )
        body = position + 8
        if chunk == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", wav[body : body + 16])
        elif chunk == b"data":
            data = wav[body : min(len(wav), body + size)]
            if bits != 16 or rate <= 0:
                raise OpenMaaSError(f"espeak-ng wrote {bits}-bit audio at {rate} Hz")
            pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
            mono = pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm
            samples: npt.NDArray[np.float32] = mono.astype(np.float32) / 32768.0
            return SpeechAudio(samples, rate)
        position = body + size + (size & 1)
    raise OpenMaaSError("espeak-ng wrote a WAV header without audio")


def slow_down(samples: npt.NDArray[np.float32], rate: int, tempo: float) -> npt.NDArray[np.float32]:
    """The samples played at `tempo` (0.5 = half speed) with the pitch kept (FFmpeg's atempo;
    each stage takes 0.5 to 2.0)."""
    import av

    graph = av.filter.Graph()
    source = graph.add_abuffer(format="flt", sample_rate=rate, layout="mono")
    stages = []
    while tempo < 0.5:
        stages.append(0.5)
        tempo /= 0.5
    stages.append(tempo)
    last = source
    for stage in stages:
        node = graph.add("atempo", f"{stage:.6f}")
        last.link_to(node)
        last = node
    sink = graph.add("abuffersink")
    last.link_to(sink)
    graph.configure()
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    graph.push(frame)
    graph.push(None)
    out: list[npt.NDArray[np.float32]] = []
    while True:
        try:
            pulled = graph.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            break
        out.append(pulled.to_ndarray().reshape(-1).astype(np.float32))
    return np.concatenate(out) if out else samples
