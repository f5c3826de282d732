"""The OpenAI-compatible API against a real server, driven by the official `openai` client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from openai import OpenAI

from openmaas import Client
from openmaas.protocol.registry import PathSource
from tests.integration import authed
from tests.integration.conftest import RunningServer
from tests.runtimes.tiny_models import build_bert, build_gpt2, minilm_path

pytestmark = pytest.mark.integration

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SENTENCES = ["The cat sits on the mat.", "A quick brown fox.", "Embeddings map text to vectors."]


@pytest.fixture(scope="module")
def client(serving_server: RunningServer) -> Iterator[OpenAI]:
    with OpenAI(
        base_url=f"{serving_server.url}/v1", api_key=serving_server.key, max_retries=0
    ) as c:
        yield c


@pytest.fixture(scope="module")
def tiny(serving_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Registers tiny models on the shared server: a causal LM (two versions) and a
    moderation classifier whose `toxic` label always wins."""
    root = tmp_path_factory.mktemp("tiny-models")
    with Client(serving_server.url, api_key=serving_server.key) as sdk:
        for seed in (0, 1):
            sdk.register(
                "tiny-gpt2", PathSource(path=str(build_gpt2(root / f"gpt2-{seed}", seed=seed)))
            )
        sdk.set_alias("tiny-gpt2", "production", 1)
        toxic = build_bert(
            root / "toxic",
            head="sequence-classification",
            labels=["safe", "toxic"],
            forced_label="toxic",
        )
        sdk.register("tiny-moderation", PathSource(path=str(toxic)))
        cross = build_bert(root / "cross", head="sequence-classification", labels=["relevance"])
        sdk.register("tiny-cross-encoder", PathSource(path=str(cross)))  # detected: rerank
    return "tiny-gpt2"


def test_models_list_and_retrieve(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"all-minilm-l6-v2", "vader", "en-core-web-sm", "whisper-tiny-en"} <= ids
    model = client.models.retrieve("all-minilm-l6-v2")
    assert model.id == "all-minilm-l6-v2"
    assert model.object == "model"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


def test_embeddings_match_in_process_computation(client: OpenAI) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(
        SENTENCES, normalize_embeddings=True
    )
    default = client.embeddings.create(model="all-minilm-l6-v2", input=SENTENCES)  # base64
    floats = client.embeddings.create(
        model="all-minilm-l6-v2", input=SENTENCES, encoding_format="float"
    )
    for response in (default, floats):
        vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
        assert vectors.shape == (3, 384)
        cosines = (vectors * reference).sum(axis=1)
        assert cosines.min() > 0.9999, cosines
        assert [d.index for d in response.data] == [0, 1, 2]
        assert response.usage.prompt_tokens == response.usage.total_tokens > 3 * 5
    single = client.embeddings.create(model="all-minilm-l6-v2", input=SENTENCES[0])
    np.testing.assert_allclose(single.data[0].embedding, floats.data[0].embedding, atol=1e-5)


def test_embeddings_from_token_ids(client: OpenAI) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    ids = tokenizer(SENTENCES[0], add_special_tokens=False)["input_ids"]
    by_ids = client.embeddings.create(
        model="all-minilm-l6-v2", input=[ids], encoding_format="float"
    )
    by_text = client.embeddings.create(
        model="all-minilm-l6-v2", input=SENTENCES[0], encoding_format="float"
    )
    np.testing.assert_allclose(by_ids.data[0].embedding, by_text.data[0].embedding, atol=1e-4)


def test_embedding_errors_say_what_to_fix(client: OpenAI) -> None:
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"model": "all-minilm-l6-v2", "input": []}, "invalid_request", "empty"),
        ({"model": "all-minilm-l6-v2", "input": ["ok", " "]}, "invalid_request", "input[1]"),
        ({"model": "vader", "input": "hi"}, "wrong_task", "embedding"),
        ({"model": "all-minilm-l6-v2", "input": "hi", "dimensions": 100}, "invalid_request", "384"),
        (
            {"model": "all-minilm-l6-v2", "input": "word " * 400},
            "context_length_exceeded",
            "truncate",
        ),
    ]
    for body, code, hint in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(**body)  # type: ignore[arg-type]
        assert refused.value.code == code, body
        assert hint in refused.value.message, refused.value.message
    truncated = client.embeddings.create(
        model="all-minilm-l6-v2", input="word " * 400, extra_body={"truncate": True}
    )
    assert len(truncated.data[0].embedding) == 384
    assert truncated.usage.prompt_tokens == 256  # cut at the model's max_seq_length


def test_chat_completion_with_and_without_streaming(client: OpenAI, tiny: str) -> None:
    messages = [{"role": "user", "content": "Say something."}]
    whole = client.chat.completions.create(
        model=tiny,
        messages=messages,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    choice = whole.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage is not None
    assert whole.usage.completion_tokens <= 8
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    chunks = list(
        client.chat.completions.create(
            model=tiny,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == choice.finish_reason
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_ends_with_done(serving_server: RunningServer, tiny: str) -> None:
    body = {"model": tiny, "prompt": "Hello", "max_tokens": 4, "temperature": 0, "stream": True}
    with authed.stream("POST", f"{serving_server.url}/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_completions_seeded_sampling_repeats(client: OpenAI, tiny: str) -> None:
    def sample() -> str:
        response = client.completions.create(
            model=tiny, prompt="Once", max_tokens=6, temperature=1.0, top_p=0.9, seed=42
        )
        return response.choices[0].text

    assert sample() == sample()


def test_chat_errors(client: OpenAI, tiny: str) -> None:
    with pytest.raises(openai.BadRequestError) as wrong:
        client.chat.completions.create(
            model="all-minilm-l6-v2", messages=[{"role": "user", "content": "x"}]
        )
    assert wrong.value.code == "wrong_task"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(
            model=tiny, messages=[{"role": "user", "content": "word " * 200}]
        )
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=tiny, messages=[])


def test_alias_move_takes_effect_without_failing_requests_in_flight(
    serving_server: RunningServer, tiny: str
) -> None:
    body = {"model": tiny, "prompt": "Hello", "max_tokens": 30, "temperature": 0, "stream": True}
    with authed.stream("POST", f"{serving_server.url}/v1/completions", json=body) as streaming:
        assert streaming.headers["openmaas-model-version"] == f"{tiny}:1"
        with Client(serving_server.url, api_key=serving_server.key) as sdk:
            sdk.set_alias(tiny, "production", 2)
            try:
                after = authed.post(
                    f"{serving_server.url}/v1/completions",
                    json={**body, "stream": False},
                    timeout=60,
                )
                assert after.status_code == 200
                assert after.headers["openmaas-model-version"] == f"{tiny}:2"
                lines = [line for line in streaming.iter_lines() if line]
                assert lines[-1] == "data: [DONE]"  # the old version finished its stream
            finally:
                sdk.set_alias(tiny, "production", 1)


def test_moderations_use_a_classifier(client: OpenAI, tiny: str) -> None:
    result = client.moderations.create(model="tiny-moderation", input=["you are awful", "hi"])
    assert len(result.results) == 2
    first = result.results[0]
    assert first.flagged is True
    assert first.categories.harassment is True  # Jigsaw's `toxic`, mapped
    own = first.model_dump()
    assert own["model_categories"] == {"toxic": True}  # the classifier's own labels
    assert "safe" not in own["model_category_scores"]
    with pytest.raises(openai.BadRequestError) as no_model:
        client.moderations.create(input="hi")
    assert "OPENMAAS_MODERATION_MODEL" in no_model.value.message


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="needs the Debian package pocketsphinx-testdata")
def test_transcription(client: OpenAI) -> None:
    clip = sorted(LIBRIVOX.glob("*.wav"))[0]
    with clip.open("rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-tiny-en", file=audio)
    reference = (LIBRIVOX / "transcription").read_text().splitlines()[0].lower()
    words = set(result.text.lower().replace(",", "").replace(".", "").split())
    expected = {w for w in reference.split() if w.isalpha()}
    assert len(words & expected) >= 0.6 * len(expected), (result.text, reference)
    with clip.open("rb") as audio:
        text = client.audio.transcriptions.create(
            model="whisper-tiny-en", file=audio, response_format="text"
        )
    assert isinstance(text, str)
    assert text.strip()
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-tiny-en", file=("x.wav", b"not audio"))


def test_error_shapes_and_statuses(serving_server: RunningServer) -> None:
    url = serving_server.url
    malformed = authed.post(
        f"{url}/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert set(malformed.json()["error"]) == {"message", "type", "param", "code"}
    too_big = authed.post(
        f"{url}/v1/embeddings",
        content=b"x" * (17 << 20),
        headers={"content-type": "application/json"},
    )
    assert too_big.status_code == 413
    many = authed.post(
        f"{url}/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["a"] * 5000}
    )
    assert many.status_code == 400
    assert "at most 2048" in many.json()["error"]["message"]
    for response in (malformed, too_big, many):
        assert response.headers["x-request-id"]


def test_task_routes(serving_server: RunningServer) -> None:
    url = serving_server.url
    classified = authed.post(
        f"{url}/v1/classify",
        json={"model": "vader", "input": ["I love it", "I hate it"], "top_k": 2},
    ).json()
    assert [d["label"] for d in classified["data"]] == ["positive", "negative"]
    assert len(classified["data"][0]["labels"]) == 2
    assert classified["usage"]["prompt_tokens"] > 0
    ner = authed.post(
        f"{url}/v1/ner", json={"model": "en-core-web-sm", "input": "Angela Merkel visited Paris."}
    ).json()
    labels = {(e["text"], e["label"]) for e in ner["data"][0]["entities"]}
    assert ("Angela Merkel", "PERSON") in labels
    assert ("Paris", "GPE") in labels
    text = (
        "OpenMaaS serves models. It batches requests to use the machine well. "
        "Metrics are exported for Prometheus. Users call it with clients they already have. "
        "Models are versioned, and aliases move between versions."
    )
    summary = authed.post(f"{url}/v1/summarize", json={"model": "textrank", "input": text}).json()
    assert summary["data"][0]["text"]
    reranked = authed.post(
        f"{url}/v1/rerank",
        json={
            "model": "all-minilm-l6-v2",
            "query": "Where do cats sleep?",
            "documents": ["Stock markets fell today.", "Cats often sleep on warm windowsills."],
            "top_n": 1,
            "return_documents": True,
        },
    ).json()
    assert reranked["results"][0]["index"] == 1
    assert reranked["results"][0]["document"]["text"].startswith("Cats")
    wrong = authed.post(f"{url}/v1/ner", json={"model": "vader", "input": "x"})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "wrong_task"


def test_metrics_count_requests_batches_and_cache(
    serving_server: RunningServer, client: OpenAI
) -> None:
    for _ in range(2):
        client.embeddings.create(model="all-minilm-l6-v2", input="metrics probe")
    text = authed.get(f"{serving_server.url}/metrics").text
    assert (
        'openmaas_requests_total{model="all-minilm-l6-v2",route="/v1/embeddings",status="2xx"}'
        in text
    )
    assert 'openmaas_batch_size_count{model="all-minilm-l6-v2"}' in text
    assert 'openmaas_cache_hits_total{model="all-minilm-l6-v2",task="embedding"}' in text
    assert "openmaas_pool_resident_bytes" in text


def test_concurrent_requests_share_batches(serving_server: RunningServer) -> None:
    """64 one-sentence requests at once all succeed and are served in fewer batches."""
    url = f"{serving_server.url}/v1/embeddings"
    before = _batches(serving_server)
    results: list[int] = []

    def call(i: int) -> None:
        response = authed.post(
            url,
            json={"model": "all-minilm-l6-v2", "input": f"sentence {i} of the concurrency test"},
            timeout=60,
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 64
    assert _batches(serving_server) - before < 64


def _batches(server: RunningServer) -> float:
    for line in authed.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith('openmaas_batch_size_count{model="all-minilm-l6-v2"}'):
            return float(line.split()[-1])
    return 0.0


def test_rerank_with_a_cross_encoder(serving_server: RunningServer, tiny: str) -> None:
    documents = ["first document", "second document", "third one"]
    response = authed.post(
        f"{serving_server.url}/v1/rerank",
        json={"model": "tiny-cross-encoder", "query": "which?", "documents": documents},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    refused = authed.post(
        f"{serving_server.url}/v1/rerank",
        json={"model": "tiny-moderation", "query": "q", "documents": ["d"]},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "wrong_task"
