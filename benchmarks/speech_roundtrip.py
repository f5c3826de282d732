"""Speech round trip: espeak-ng speaks the Harvard sentences, Whisper writes them back down.

A fresh `openmaas serve` (catalog registered) synthesizes each of the 40 sentences of Harvard
lists 1-4 (IEEE 1969, the phonetically balanced set speech tests use) with `espeak-ng` through
`POST /v1/audio/speech` (WAV, at speeds 1.0 and 0.8), one sentence a request and then one list
of ten a request, and transcribes each clip with the
catalog's `whisper-tiny-en` through `POST /v1/audio/transcriptions`, both with the official
`openai` client. The word error rate is over the whole set (edits / reference words), after
the usual normalization: lowercase, punctuation and apostrophes dropped, numbers under 100 as
words.

It also times a five-sentence text streamed as PCM: when its first bytes arrive against the
whole response, which is what streaming sentence by sentence buys.

It prints the figures and rewrites the "Speech synthesis: round trip" section of
`docs/benchmarks.md` (`--no-docs` leaves it alone).

Usage::

    .venv/bin/python benchmarks/speech_roundtrip.py              # about three minutes
    .venv/bin/python benchmarks/speech_roundtrip.py --voices en-us en-gb-x-rp
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from openai import OpenAI

from benchmarks.embeddings_serving import free_port, running
from benchmarks.markdown_sections import DOCS_PATH, describe_environment, write_section
from openmaas.auth.keys import generate_key

SYNTHESIS_MODEL = "espeak-ng"
TRANSCRIPTION_MODEL = "whisper-tiny-en"
VOICES = ("en-us", "en-gb")
SPEEDS = (1.0, 0.8)
# tests/integration/test_speech.py: Harvard list 1 as one request, en-us, speed 1.0 (measured
# with this script's round_trip; whisper-tiny-en decodes deterministically at temperature 0).
ROUND_TRIP_TEST_WER = 0.087
ROUND_TRIP_TEST_BOUND = 0.15
THREADS = 2
SECTION = "## Speech synthesis: round trip"

HARVARD = (
    # list 1
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    # list 2
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    # list 3
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    # list 4
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
)

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _number_words(token: str) -> str:
    if not token.isdigit() or int(token) >= 100:
        return token
    value = int(token)
    if value < 20:
        return _ONES[value]
    tens, ones = divmod(value, 10)
    return _TENS[tens - 2] + (f" {_ONES[ones]}" if ones else "")


def normalize(text: str) -> list[str]:
    """Words for scoring: lowercase, apostrophes and punctuation dropped, small numbers as
    words (Whisper writes "50" for "fifty")."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(_number_words(token) for token in text.split()).split()


def word_edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance in words (substitutions, deletions, insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, start=1):
        current = [i]
        for j, heard in enumerate(hypothesis, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != heard))
            )
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: all edits over all reference words."""
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    words = sum(len(r) for r, _ in pairs)
    return sum(word_edits(r, h) for r, h in pairs) / words


def round_trip(client: OpenAI, text: str, voice: str, speed: float = 1.0) -> str:
    """`text` spoken (WAV) and transcribed back."""
    speech = client.audio.speech.create(
        model=SYNTHESIS_MODEL, voice=voice, input=text, response_format="wav", speed=speed
    )
    transcript = client.audio.transcriptions.create(
        model=TRANSCRIPTION_MODEL, file=("speech.wav", speech.content, "audio/wav")
    )
    return transcript.text


def lists(sentences: Sequence[str]) -> list[str]:
    """The Harvard lists, ten sentences each, as one text."""
    return [" ".join(sentences[i : i + 10]) for i in range(0, len(sentences), 10)]


@dataclass(frozen=True, slots=True)
class StreamTiming:
    first_bytes_s: float
    whole_s: float
    audio_s: float


def stream_timing(client: OpenAI, text: str, voice: str) -> StreamTiming:
    started = time.perf_counter()
    first: float | None = None
    size = 0
    with client.audio.speech.with_streaming_response.create(
        model=SYNTHESIS_MODEL, voice=voice, input=text, response_format="pcm"
    ) as response:
        for chunk in response.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - started
            size += len(chunk)
    assert first is not None
    return StreamTiming(first, time.perf_counter() - started, size / 2 / 24_000)


Rates = dict[tuple[str, float], tuple[float, float]]  # (voice, speed): (per sentence, per list)


def report(rates: Rates, words: int, timing: StreamTiming, environment: str) -> str:
    rows = "\n".join(
        f"| `{voice}` | {speed:g} | {one:.1%} | {ten:.1%} |"
        for (voice, speed), (one, ten) in rates.items()
    )
    return (
        f"{SECTION}\n\n"
        f"`espeak-ng` speaks the {len(HARVARD)} Harvard sentences of lists 1-4 ({words} "
        f"words) through `POST /v1/audio/speech`; the catalog's `{TRANSCRIPTION_MODEL}` "
        "transcribes each clip through `POST /v1/audio/transcriptions`. Word error rate over "
        "the whole set (lowercase, punctuation dropped, numbers as words), "
        "`benchmarks/speech_roundtrip.py`; each sentence spoken and transcribed on its own (a "
        "clip of 2-3 s), and each list of ten as one request (22-31 s, one Whisper window):\n\n"
        "| voice | speed | WER, sentence by sentence | WER, ten sentences a request |\n"
        f"|---|---|---|---|\n{rows}\n\n"
        "The round-trip test (`tests/integration/test_speech.py`) speaks list 1 in `en-us` "
        f"at speed 1.0 as one request (measured: {ROUND_TRIP_TEST_WER:.1%}) and holds its "
        f"WER under {ROUND_TRIP_TEST_BOUND:.0%}. Espeak-ng's formant voices are intelligible "
        "but far from human, and Whisper tiny.en (39M parameters) was trained on human "
        "speech: most errors are words misheard as near homophones (colt/cold, mend/amend), "
        "far fewer when a whole list gives it context.\n\n"
        f"Streaming: a five-sentence text ({timing.audio_s:.1f} s of audio, PCM) starts "
        f"arriving after {timing.first_bytes_s * 1000:.0f} ms; the whole response takes "
        f"{timing.whole_s * 1000:.0f} ms (medians of 5).\n\n"
        f"Measured on {environment}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", nargs="+", default=list(VOICES), help="espeak-ng voices")
    parser.add_argument("--speeds", nargs="+", type=float, default=list(SPEEDS), help="paces")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    key = generate_key().plaintext
    with tempfile.TemporaryDirectory(prefix="speech-roundtrip-") as tmp:
        work = Path(tmp)
        port = free_port()
        env = {
            "OPENMAAS_HOME": str(work / "home"),
            "OPENMAAS_ADMIN_KEY": key,
            "OPENMAAS_CATALOG_AUTOREGISTER": "true",
            "OPENMAAS_THREADS": str(THREADS),
            "OPENMAAS_LOG_LEVEL": "warning",
        }
        command = [sys.executable, "-m", "openmaas.cli.main", "serve", "--host", "127.0.0.1"]
        with (
            running(
                [*command, "--port", str(port)], {**os.environ, **env}, port, work / "log"
            ) as server,
            OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=300) as client,
        ):
            rates: Rates = {}
            for voice in args.voices:
                for speed in args.speeds:
                    heard = [round_trip(client, s, voice, speed) for s in HARVARD]
                    one = word_error_rate(HARVARD, heard)
                    texts = lists(HARVARD)
                    ten = word_error_rate(
                        texts, [round_trip(client, t, voice, speed) for t in texts]
                    )
                    rates[voice, speed] = (one, ten)
                    print(f"{voice} at {speed:g}: WER {one:.1%} by sentence, {ten:.1%} by list")
                    for said, written in zip(HARVARD, heard, strict=True):
                        if normalize(said) != normalize(written):
                            print(f"  {said!r} -> {written.strip()!r}", flush=True)
            text = " ".join(HARVARD[:5])
            timings = [stream_timing(client, text, args.voices[0]) for _ in range(5)]
    timing = StreamTiming(
        statistics.median(t.first_bytes_s for t in timings),
        statistics.median(t.whole_s for t in timings),
        timings[0].audio_s,
    )
    print(
        f"stream: first bytes {timing.first_bytes_s * 1000:.0f} ms, whole "
        f"{timing.whole_s * 1000:.0f} ms, {timing.audio_s:.1f} s of audio"
    )
    words = sum(len(normalize(s)) for s in HARVARD)
    environment = describe_environment(["faster-whisper", "av"], THREADS)
    if not args.no_docs:
        write_section(DOCS_PATH, report(rates, words, timing, environment))


if __name__ == "__main__":
    main()
