"""A small GPT trained from scratch through the OpenAI fine-tuning API, then served: the
stock `openai` client uploads a chat file, creates a job with `model="gpt"`, follows it to
`succeeded`, and talks to the model it registered on `/v1/chat/completions` (whole and
streamed) and `/v1/completions`. The training run is the example of docs/training.md, run
as written.

The chats are four questions about four animals, each always answered with that animal's
sentence ("the dog slept on the rug."): greedy decoding must give the sentence for the
animal asked about, which a model that had not learned would not. A 2-layer, 64-wide model
learns it in 220 steps (seconds on one CPU core).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from openmaas import Client
from openmaas.datasets.formats import render_chat
from tests.integration.conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"
SECTION = "## A small GPT from scratch (text generation)"
SENTENCES = {
    "cat": "the cat sat on the mat.",
    "dog": "the dog slept on the rug.",
    "bird": "the bird sang in the tree.",
    "fish": "the fish swam in the pond.",
}
QUESTIONS = ("where is the {}?", "what did the {} do?", "tell me about the {}.", "and the {}?")
# 300 chats: 240 to train on, 30 each to validate and test (the default 0.1 splits). With
# the example's hyperparameters (batch 8, 10x the default 1e-3 learning rate, 20 epochs),
# every question was answered right for every seed tried.
N_CHATS = 300
JOB_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("gpt") / "home", {"OPENMAAS_WORKERS": "1"})
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def oai(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as client:
        yield client


def chat_jsonl() -> bytes:
    rng = random.Random(0)
    lines = []
    for _ in range(N_CHATS):
        animal = rng.choice(list(SENTENCES))
        question = rng.choice(QUESTIONS).format(animal)
        messages = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": SENTENCES[animal]},
        ]
        lines.append(json.dumps({"messages": messages}))
    return ("\n".join(lines) + "\n").encode()


def docs_example() -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + 1)]
    [script] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return script


@pytest.fixture(scope="module")
def trained(
    server: RunningServer, oai: openai.OpenAI, tmp_path_factory: pytest.TempPathFactory
) -> FineTuningJob:
    """The job the docs example runs (it uploads, trains, polls and asks one question)."""
    where = tmp_path_factory.mktemp("docs-example")
    (where / "chats.jsonl").write_bytes(chat_jsonl())
    ran = subprocess.run(
        [sys.executable, "-c", docs_example().replace("http://127.0.0.1:8000", server.url)],
        cwd=where,
        env={**os.environ, "OPENMAAS_API_KEY": server.key},
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    status_line, answer = ran.stdout.splitlines()
    job_id, status, model = status_line.split()
    assert status == "succeeded"
    assert re.fullmatch(r"animals-[0-9a-f]{8}", model)
    assert answer == SENTENCES["dog"]
    return oai.fine_tuning.jobs.retrieve(job_id)


def ask(
    oai: openai.OpenAI, model: str, question: str, stop: list[str] | None = None
) -> tuple[str, str]:
    """The greedy answer to one question, and why it ended."""
    answer = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=32,
        stop=stop,
    )
    choice = answer.choices[0]
    return choice.message.content or "", choice.finish_reason


# -- the job ----------------------------------------------------------------------------------


def test_the_job_trains_a_gpt_from_a_chat_file_and_registers_it(
    server: RunningServer, oai: openai.OpenAI, trained: FineTuningJob
) -> None:
    assert (trained.model, trained.status, trained.seed) == ("gpt", "succeeded", 7)
    assert trained.fine_tuned_model == f"animals-{trained.id[6:14]}"
    assert trained.hyperparameters.n_epochs == 20
    assert trained.hyperparameters.batch_size == 8
    assert trained.hyperparameters.learning_rate_multiplier == 10
    assert trained.trained_tokens is not None
    assert trained.trained_tokens > 20 * 3000

    # Newest first, every page (iterating the page follows `after`).
    events = list(oai.fine_tuning.jobs.list_events(trained.id, limit=100))
    assert events[0].message == f"Job succeeded: registered {trained.fine_tuned_model}"
    assert any(e.message.startswith("tokenizer: ") for e in events)
    metrics = [e.data for e in events if e.type == "metrics" and isinstance(e.data, dict)]
    epochs = sorted((d for d in metrics if "val_loss" in d), key=lambda d: d["epoch"])
    assert [d["epoch"] for d in epochs][-3:] == [18, 19, 20]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"] / 3
    assert {"train_loss", "val_loss", "val_perplexity"} <= set(epochs[-1])
    assert oai.fine_tuning.jobs.checkpoints.list(trained.id).data

    with Client(server.url, api_key=server.key) as sdk:
        version = sdk.resolve(str(trained.fine_tuned_model))
    assert (version.task, version.runtime) == ("text-generation", "transformers")
    # One real choice per chat (the animal, of 4) in about 30 tokens: near 4 ** (1 / 30).
    assert 1.0 < version.metrics["perplexity"] < 1.5
    assert version.params["recipe"] == "gpt"
    assert not any(f.path.endswith((".bin", ".pt", ".pkl")) for f in version.files)
    assert "chat_template.jinja" not in {f.path for f in version.files}


# -- serving ----------------------------------------------------------------------------------


def test_chat_completions_answer_what_the_model_learned(
    oai: openai.OpenAI, trained: FineTuningJob
) -> None:
    model = str(trained.fine_tuned_model)
    for animal, sentence in SENTENCES.items():
        text, finish = ask(oai, model, f"what did the {animal} do?")
        assert (text, finish) == (sentence, "stop")  # stopped at <|im_end|>, not by length

    answer = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "where is the dog?"}],
        temperature=0,
        max_tokens=32,
    )
    assert answer.object == "chat.completion"
    assert answer.model == model
    assert answer.id.startswith("chatcmpl-")
    (choice,) = answer.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == SENTENCES["dog"]
    usage = answer.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    # The usage counts tokens: the chat's prompt is the template's rendering, and the answer
    # is what extends it (its tokens plus the <|im_end|> that ended it).
    prompt = render_chat([{"role": "user", "content": "where is the dog?"}])
    prompt += "\n<|im_start|>assistant\n"
    opened = oai.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=32)
    assert opened.choices[0].text == SENTENCES["dog"]
    assert opened.usage is not None
    assert opened.usage.prompt_tokens == usage.prompt_tokens
    closed = oai.completions.create(
        model=model, prompt=prompt + SENTENCES["dog"] + "<|im_end|>", max_tokens=1
    )
    assert closed.usage is not None
    assert closed.usage.prompt_tokens - usage.prompt_tokens == usage.completion_tokens

    # A stop sequence ends the answer before it, and is not part of it.
    assert ask(oai, model, "where is the dog?", stop=["rug"]) == ("the dog slept on the ", "stop")


def test_a_streamed_chat_completion_matches_the_whole_one(
    oai: openai.OpenAI, trained: FineTuningJob
) -> None:
    model = str(trained.fine_tuned_model)
    messages = [{"role": "user", "content": "tell me about the bird."}]
    whole = oai.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=32
    )
    chunks = list(
        oai.chat.completions.create(
            model=model,
            messages=messages,
            temperature=0,
            max_tokens=32,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.model == model for c in chunks)
    assert len({c.id for c in chunks}) == 1
    *deltas, usage_chunk = chunks
    assert deltas[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in deltas)
    assert text == whole.choices[0].message.content == SENTENCES["bird"]
    assert len([c for c in deltas if c.choices[0].delta.content]) > 3  # token by token
    assert [c.choices[0].finish_reason for c in deltas][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in deltas[:-1])
    assert usage_chunk.choices == []
    assert usage_chunk.usage == whole.usage


def test_completions_continue_the_learned_text(oai: openai.OpenAI, trained: FineTuningJob) -> None:
    model = str(trained.fine_tuned_model)
    completion = oai.completions.create(
        model=model, prompt="<|im_start|>assistant\nthe fish", temperature=0, max_tokens=32
    )
    assert completion.object == "text_completion"
    (choice,) = completion.choices
    assert (choice.text, choice.finish_reason) == (" swam in the pond.", "stop")

    cut = oai.completions.create(
        model=model, prompt="<|im_start|>assistant\nthe cat", temperature=0, max_tokens=2
    )
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None
    assert cut.usage.completion_tokens == 2
    assert " sat on the mat.".startswith(cut.choices[0].text)
    assert cut.choices[0].text.strip()

    streamed = oai.completions.create(
        model=model,
        prompt="<|im_start|>assistant\nthe fish",
        temperature=0,
        max_tokens=32,
        stream=True,
    )
    parts = list(streamed)
    assert "".join(p.choices[0].text for p in parts) == " swam in the pond."
    assert parts[-1].choices[0].finish_reason == "stop"
