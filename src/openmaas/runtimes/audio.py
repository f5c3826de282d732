"""Audio files to 16 kHz mono samples, bounded in length.

A compressed file can be tiny and long: an hour of silence is 641 KiB of FLAC, and decoding it
costs about 230 MB of samples and, through Whisper, minutes of CPU. So the length is checked
twice: first the duration the container declares (FLAC's STREAMINFO, WAV's data size, MP3's
bitrate), before a single frame is decoded; then the samples themselves as they are decoded
frame by frame, so a header that lies is caught as soon as the decoded audio passes the limit,
with no more than the limit's worth of samples ever held.

Example::

    samples = decode_audio_bytes(Path("clip.flac").read_bytes(), max_seconds=1800)
    samples.dtype, samples.ndim  # -> float32, 1 (16,000 a second)
"""

from __future__ import annotations

import gc
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from openmaas.errors import InvalidRequest, PayloadTooLarge

SAMPLE_RATE = 16_000  # Hz: what Whisper's feature extractor expects
FORMATS = "WAV, FLAC, MP3, OGG/Opus, M4A or WebM"
# Resampling may round a clip of exactly the limit up by a few samples.
TOLERANCE_S = 1.0


def decode_audio_bytes(
    audio: bytes, *, max_seconds: float | None = None
) -> npt.NDArray[np.float32]:
    """The file's first audio stream as 16 kHz mono float32 samples; `PayloadTooLarge` (413)
    when it lasts longer than `max_seconds` (None: no limit)."""
    import av

    if not audio:
        raise InvalidRequest(f"the audio file is empty; send {FORMATS}", param="file")
    try:
        with av.open(io.BytesIO(audio), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidRequest(
                    f"the file holds no audio stream; send {FORMATS}", param="file"
                )
            stream = container.streams.audio[0]
            if max_seconds is not None:
                declared = _declared_seconds(container, stream)
                if declared is not None and declared > max_seconds + TOLERANCE_S:
                    raise _too_long(f"lasts {declared:.0f} s", max_seconds)
            samples = _decode(container, stream, max_seconds)
    except av.error.FFmpegError as exc:
        raise InvalidRequest(
            f"could not decode the audio ({exc.__class__.__name__}); send {FORMATS}",
            param="file",
        ) from exc
    finally:
        # PyAV's resampler keeps native buffers until collected (faster-whisper #390).
        gc.collect()
    if samples.size == 0:
        raise InvalidRequest(f"the audio holds no samples; send {FORMATS}", param="file")
    return samples


def _declared_seconds(container: Any, stream: Any) -> float | None:
    """The duration the container's header declares, when it declares one."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE: microseconds
    return None


def _decode(container: Any, stream: Any, max_seconds: float | None) -> npt.NDArray[np.float32]:
    import av

    limit = None if max_seconds is None else int((max_seconds + TOLERANCE_S) * SAMPLE_RATE)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[npt.NDArray[Any]] = []  # int16, as the resampler was asked
    total = 0
    for frame in _valid_frames(container.decode(stream)):
        frame.pts = None  # timestamps of broken files would make the resampler refuse frames
        for resampled in resampler.resample(frame):
            chunk = resampled.to_ndarray().reshape(-1)
            total += chunk.size
            if limit is not None and total > limit:
                assert max_seconds is not None
                raise _too_long(f"decodes to more than {max_seconds:.0f} s", max_seconds)
            chunks.append(chunk)
    for resampled in resampler.resample(None):  # the resampler's buffered tail
        chunks.append(resampled.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    # s16 to float32 as faster-whisper's own decoder does, so transcripts do not move.
    samples: npt.NDArray[np.float32] = np.concatenate(chunks).astype(np.float32) / 32768.0
    return samples


def _valid_frames(frames: Iterator[Any]) -> Iterator[Any]:
    """Frames, skipping those FFmpeg reports as invalid (as faster-whisper does)."""
    import av

    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue


def _too_long(what: str, max_seconds: float) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the audio {what}; this server transcribes at most {max_seconds:.0f} s of audio a "
        f"request (OPENMAAS_MAX_AUDIO_SECONDS): send a shorter clip",
        param="file",
    )
