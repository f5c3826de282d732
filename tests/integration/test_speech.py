"""`POST /v1/audio/speech` against a real server with the catalog's espeak-ng voices: the
official `openai` client (whole files and streamed), every response format decoded back,
sentence-by-sentence streaming, server-sent events, the voices in `GET /v1/models`, the
bad inputs named, and the usage metered."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from benchmarks.speech_roundtrip import (
    HARVARD,
    ROUND_TRIP_TEST_BOUND,
    lists,
    round_trip,
    word_error_rate,
)
from openai import BadRequestError, OpenAI

from openmaas import Client
from tests.integration import authed
from tests.integration.conftest import RunningServer
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_voices import AMPLITUDE, RATE, SAMPLES_PER_ID, build_piper_voice, ids_heard

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="apt-get install espeak-ng"),
]

MODEL = "espeak-ng"  # in the catalog the serving server registers
SENTENCES = (
    "The birch canoe slid on the smooth planks. "
    "Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. "
    "These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls."
)


@pytest.fixture(scope="module")
def client(serving_server: RunningServer) -> Iterator[OpenAI]:
    with OpenAI(
        base_url=f"{serving_server.url}/v1", api_key=serving_server.key, max_retries=0
    ) as c:
        yield c


def decoded(audio: bytes) -> tuple[str, int, float]:
    """(codec, sample rate, seconds) of an audio file, decoded to its last frame."""
    import av

    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, stream.rate, samples / stream.rate


def speak(server: RunningServer, **body: Any) -> httpx.Response:
    return authed.post(
        f"{server.url}/v1/audio/speech", json={"model": MODEL, "voice": "en-us", **body}
    )


def test_models_list_the_voices(client: OpenAI, serving_server: RunningServer) -> None:
    card = authed.get(f"{serving_server.url}/v1/models/{MODEL}").json()
    assert card["task"] == "speech-synthesis"
    assert {"en-us", "en-gb", "fr-fr", "de"} <= set(card["voices"])
    listed = {m.id: m for m in client.models.list()}
    assert listed[MODEL].model_extra is not None
    assert listed[MODEL].model_extra["voices"] == card["voices"]


def test_the_openai_client_gets_speech(client: OpenAI) -> None:
    speech = client.audio.speech.create(
        model=MODEL, voice="en-us", input="Hello from OpenMaaS.", response_format="wav"
    )
    codec, rate, seconds = decoded(speech.content)
    assert (codec, rate) == ("pcm_s16le", 22050)
    assert 0.8 < seconds < 4.0


def test_the_openai_client_streams_speech_sentence_by_sentence(client: OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model=MODEL, voice="en-gb", input=SENTENCES, response_format="pcm"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        assert response.headers["openmaas-model-version"].startswith(f"{MODEL}:")
        chunks = [chunk for chunk in response.iter_bytes() if chunk]
    pcm = b"".join(chunks)
    seconds = len(pcm) / 2 / 24_000  # OpenAI's pcm: 16-bit at 24 kHz
    assert 8 < seconds < 20, seconds
    assert len(chunks) >= 2  # one per sentence as synthesized, not one at the end
    samples = np.frombuffer(pcm, dtype="<i2")
    assert np.abs(samples).max() > 3000  # speech, not silence


@pytest.mark.parametrize(
    ("response_format", "codec", "media_type"),
    [
        ("mp3", "mp3float", "audio/mpeg"),
        ("opus", "opus", "audio/ogg"),
        ("aac", "aac", "audio/aac"),
        ("flac", "flac", "audio/flac"),
        ("wav", "pcm_s16le", "audio/wav"),
    ],
)
def test_every_format_decodes_back(
    serving_server: RunningServer, response_format: str, codec: str, media_type: str
) -> None:
    reference = speak(serving_server, input=SENTENCES, response_format="pcm")
    expected_s = len(reference.content) / 2 / 24_000
    response = speak(serving_server, input=SENTENCES, response_format=response_format)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    found_codec, _, seconds = decoded(response.content)
    assert found_codec == codec
    assert seconds == pytest.approx(expected_s, abs=0.15)  # encoder padding at most


@pytest.mark.parametrize("response_format", ["opus", "pcm"])
def test_a_piece_with_nothing_to_say_still_streams(
    serving_server: RunningServer, response_format: str
) -> None:
    response = speak(serving_server, input="Hello. - ! Goodbye.", response_format=response_format)
    assert response.status_code == 200, response.text
    seconds = (
        len(response.content) / 2 / 24_000
        if response_format == "pcm"
        else decoded(response.content)[2]
    )
    assert seconds > 1.0


def test_the_default_format_is_mp3_and_speed_changes_the_pace(
    serving_server: RunningServer,
) -> None:
    normal = speak(serving_server, input=SENTENCES)
    assert normal.headers["content-type"] == "audio/mpeg"
    _, _, normal_s = decoded(normal.content)
    fast = decoded(speak(serving_server, input=SENTENCES, speed=2.0).content)[2]
    slow = decoded(speak(serving_server, input=SENTENCES, speed=0.25).content)[2]
    assert 0.4 < fast / normal_s < 0.65
    assert 3.2 < slow / normal_s < 4.8  # below espeak-ng's slowest pace: slowed by atempo


def test_server_sent_events(serving_server: RunningServer) -> None:
    response = speak(serving_server, input=SENTENCES, response_format="wav", stream_format="sse")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    assert len(events) > 2
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert decoded(audio)[2] > 8
    assert events[-1] == {
        "type": "speech.audio.done",
        "usage": {
            "input_tokens": len(SENTENCES),
            "output_tokens": 0,
            "total_tokens": len(SENTENCES),
        },
    }


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"voice": "alloy"}, "voice", "has no voice 'alloy'; its voices: af, "),
        ({"response_format": "ogg"}, "response_format", "'mp3', 'opus', 'aac'"),
        ({"speed": 4.5}, "speed", "less than or equal to 4"),
        ({"speed": 0.1}, "speed", "greater than or equal to 0.25"),
        ({"input": "x" * 4097}, "input", "at most 4096 characters"),
        ({"input": " \n "}, "input", "give the text to speak"),
        ({"instructions": "Speak warmly."}, "instructions", "take no instructions"),
        ({"model": "vader"}, "model", "speech-synthesis"),
        ({"stream_format": "json"}, "stream_format", "'audio' or 'sse'"),
    ],
)
def test_bad_requests_name_the_field(
    serving_server: RunningServer, body: dict[str, Any], param: str, says: str
) -> None:
    response = speak(serving_server, **{"input": "Hello.", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert says in error["message"]


def test_the_openai_client_sees_a_bad_voice_as_400(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.audio.speech.create(model=MODEL, voice="nova", input="Hello.")
    assert "has no voice 'nova'" in str(refused.value)


def test_usage_counts_characters_and_seconds(serving_server: RunningServer) -> None:
    with Client(serving_server.url, api_key=serving_server.key) as sdk:
        created = sdk.create_key("speech-usage", scopes=["inference"])
    text = "Usage is counted in characters."
    response = httpx.post(
        f"{serving_server.url}/v1/audio/speech",
        json={"model": MODEL, "voice": "en-gb-x-rp", "input": text, "response_format": "wav"},
        headers={"Authorization": f"Bearer {created.key}"},
        timeout=60,
    )
    seconds = decoded(response.content)[2]

    def recorded() -> dict[str, Any] | None:
        usage = authed.get(
            f"{serving_server.url}/v1/usage",
            params={"key_prefix": created.prefix.removeprefix("om-"), "group_by": ""},
        ).json()
        total: dict[str, Any] = usage["total"]
        return total if total["requests"] == 1 else None

    total = wait_for("the speech request's usage record", recorded, timeout_s=30)
    assert total["input_tokens"] == len(text)  # characters, as OpenAI counts speech
    assert total["audio_seconds"] == pytest.approx(seconds, abs=0.01)


# -- a Piper voice, registered from its .onnx and .json --------------------------------------


@pytest.fixture(scope="module")
def piper_voice(serving_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    voice = build_piper_voice(tmp_path_factory.mktemp("piper") / "voice", speakers=("ann", "bo"))
    with Client(serving_server.url, api_key=serving_server.key) as sdk:
        version = sdk.upload("tiny-piper", voice)
    assert (version.task, version.runtime, version.format) == (
        "speech-synthesis",
        "piper",
        "piper",
    )
    return "tiny-piper"


def test_a_piper_voice_speaks_through_the_same_route(
    client: OpenAI, serving_server: RunningServer, piper_voice: str
) -> None:
    card = authed.get(f"{serving_server.url}/v1/models/{piper_voice}").json()
    assert card["voices"] == ["ann", "bo"]
    speech = client.audio.speech.create(
        model=piper_voice, voice="bo", input="Hello, world! Hello again.", response_format="wav"
    )
    import av

    with av.open(io.BytesIO(speech.content)) as container:
        stream = container.streams.audio[0]
        assert stream.rate == RATE
        samples = (
            np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)]).astype(
                np.float32
            )
            / 32768.0
        )
    # Two sentences, each its own run of the graph, from BOS (id 1) to EOS (id 2).
    heard = ids_heard(samples, SAMPLES_PER_ID)
    assert (heard.count(1), heard.count(2)) == (2, 2)
    assert (heard[:2], heard[-1]) == ([1, 0], 2)
    assert np.abs(samples).max() == pytest.approx(2 * AMPLITUDE, abs=0.01)  # speaker "bo": sid 1

    refused = speak(serving_server, model=piper_voice, voice="en-us", input="Hi.")
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "voice"
    assert "its voices: ann, bo" in refused.json()["error"]["message"]


# -- the round trip: espeak-ng's speech, written back down by Whisper --------------------------


def test_whisper_writes_back_what_espeak_ng_said(client: OpenAI) -> None:
    """Harvard list 1 spoken in en-us as one request, transcribed by the catalog's
    whisper-tiny-en: measured 8.7% WER (benchmarks/speech_roundtrip.py, docs/benchmarks.md)."""
    (text, *_) = lists(HARVARD)
    heard = round_trip(client, text, "en-us")
    assert word_error_rate([text], [heard]) < ROUND_TRIP_TEST_BOUND, heard


def test_characters_count_against_a_key_s_token_limits(serving_server: RunningServer) -> None:
    with Client(serving_server.url, api_key=serving_server.key) as sdk:
        created = sdk.create_key(
            "speech-limited", scopes=["inference"], limits={"tokens_per_minute": 40}
        )

    def say(text: str) -> httpx.Response:
        return httpx.post(
            f"{serving_server.url}/v1/audio/speech",
            json={"model": MODEL, "voice": "en-us", "input": text, "response_format": "pcm"},
            headers={"Authorization": f"Bearer {created.key}"},
            timeout=60,
        )

    assert say("Thirty characters of speech...").status_code == 200
    refused = say("Another thirty characters here.")  # 60 > 40 a minute
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"]
