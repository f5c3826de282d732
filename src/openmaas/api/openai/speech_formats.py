"""The audio formats of `/v1/audio/speech`, encoded as the audio is produced.

OpenAI's `response_format`s: `wav` (16-bit, the voice's own rate, its header written before the
length is known: sizes 0xFFFFFFFF, as OpenAI streams it), `pcm` (raw 16-bit little-endian at
24 kHz, as OpenAI documents it: resampled from the voice's rate), and `mp3`, `opus` (in Ogg),
`aac` (ADTS) and `flac` through FFmpeg's encoders (PyAV). Each encoder takes the audio piece
by piece and returns the bytes ready to send, so the response streams.

Example::

    encoder = open_encoder("mp3", sample_rate=22050)
    chunks = [encoder.encode(audio.samples) for audio in pieces] + [encoder.finish()]
"""

from __future__ import annotations

import struct
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
PCM_RATE = 24_000  # Hz: OpenAI's pcm
MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# format -> (FFmpeg container, encoder, output rate: None keeps the voice's rate). Opus
# encodes at 48 kHz only; the others take the usual voice rates (16, 22.05, 24 kHz).
_FFMPEG: dict[str, tuple[str, str, int | None]] = {
    "mp3": ("mp3", "libmp3lame", None),
    "opus": ("ogg", "libopus", 48_000),
    "aac": ("adts", "aac", None),
    "flac": ("flac", "flac", None),
}
# Ogg pages are flushed every 1 s by default: at 20 ms each piece goes out as it is encoded.
_CONTAINER_OPTIONS = {"ogg": {"page_duration": "20000"}}

Samples = npt.NDArray[np.float32]


class SpeechEncoder(Protocol):
    def encode(self, samples: Samples) -> bytes: ...
    def finish(self) -> bytes: ...
    def close(self) -> None: ...  # after finish, or instead of it (a stream cut short)


def open_encoder(response_format: str, sample_rate: int) -> SpeechEncoder:
    if response_format == "wav":
        return WavEncoder(sample_rate)
    if response_format == "pcm":
        return PcmEncoder(sample_rate)
    return FFmpegEncoder(response_format, sample_rate)


def _int16(samples: Samples) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0) * 32767.0
    return np.round(clipped).astype("<i2").tobytes()


class WavEncoder:
    """A WAV header for a stream of unknown length, then 16-bit samples."""

    def __init__(self, sample_rate: int) -> None:
        self._header = wav_header(sample_rate)

    def encode(self, samples: Samples) -> bytes:
        header, self._header = self._header, b""
        return header + _int16(samples)

    def finish(self) -> bytes:
        header, self._header = self._header, b""
        return header

    def close(self) -> None:
        return None


def wav_header(sample_rate: int, data_bytes: int = 0xFFFFFFFF) -> bytes:
    riff = 0xFFFFFFFF if data_bytes == 0xFFFFFFFF else 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class PcmEncoder:
    """Raw 16-bit little-endian mono at 24 kHz."""

    def __init__(self, sample_rate: int) -> None:
        import av

        self._rate = sample_rate
        self._resampler = (
            None
            if sample_rate == PCM_RATE
            else av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)
        )

    def encode(self, samples: Samples) -> bytes:
        if self._resampler is None or samples.size == 0:  # FFmpeg refuses empty frames
            return _int16(samples)
        frames = self._resampler.resample(_frame(samples, self._rate))
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)

    def finish(self) -> bytes:
        if self._resampler is None:
            return b""
        frames = self._resampler.resample(None)
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)

    def close(self) -> None:
        return None


class _Sink:
    """A write-only file for FFmpeg: not seekable, so containers write streamable output
    (no header rewritten at the end)."""

    def __init__(self) -> None:
        self._written = bytearray()

    def write(self, data: bytes) -> int:
        self._written += data
        return len(data)

    def take(self) -> bytes:
        taken = bytes(self._written)
        self._written.clear()
        return taken


class FFmpegEncoder:
    """mp3, opus, aac or flac through PyAV: frames are resampled to the encoder's sample
    format and rate and cut to its frame size by PyAV itself."""

    def __init__(self, response_format: str, sample_rate: int) -> None:
        import av

        container_format, codec, rate = _FFMPEG[response_format]
        self._rate = sample_rate
        self._sink = _Sink()
        self._container: Any = av.open(
            self._sink,
            mode="w",
            format=container_format,
            options=_CONTAINER_OPTIONS.get(container_format, {}),
        )
        self._stream: Any = self._container.add_stream(
            codec, rate=rate or sample_rate, layout="mono"
        )
        self._closed = False

    def encode(self, samples: Samples) -> bytes:
        if samples.size == 0:  # a piece of punctuation only: FFmpeg refuses an empty frame
            return b""
        for packet in self._stream.encode(_frame(samples, self._rate)):
            self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self.close()
        return self._sink.take()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


def _frame(samples: Samples, rate: int) -> Any:
    import av

    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
    )
    frame.sample_rate = rate
    return frame
