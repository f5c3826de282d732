"""Audio files made in memory with PyAV for the length-limit tests: long and tiny (silence
compresses to almost nothing), and FLAC whose header understates its length."""

from __future__ import annotations

import io

import numpy as np

RATE = 16_000  # Hz
CHUNK_S = 10  # seconds encoded per frame: an hour never sits in memory at once


def silent_audio(seconds: int, *, container: str = "flac", codec: str = "flac") -> bytes:
    """`seconds` of 16 kHz mono silence (one hour of FLAC is about 641 KiB)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=RATE, layout="mono")
        assert isinstance(stream, av.AudioStream)
        for start in range(0, seconds, CHUNK_S):
            length = min(CHUNK_S, seconds - start) * RATE
            pcm = np.zeros((1, length), dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.rate = RATE
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def understating_flac(data: bytes, *, declared_samples: int) -> bytes:
    """`data` (a FLAC file) with STREAMINFO's total-samples field set to `declared_samples`:
    a header that lies about the length of the frames that follow."""
    assert data[:4] == b"fLaC"
    # "fLaC", a 4-byte block header, then STREAMINFO; its bytes 13..17 end with the 36-bit
    # total-samples field (after sample rate, channels and bits per sample).
    start = 4 + 4 + 13
    packed = int.from_bytes(data[start : start + 5], "big")
    mask = (1 << 36) - 1
    packed = (packed & ~mask) | (declared_samples & mask)
    return data[:start] + packed.to_bytes(5, "big") + data[start + 5 :]
