"""The `gpt` recipe trained for real on a tiny corpus: four sentences whose subject decides
the rest ("the dog" is always followed by "slept on the rug."), a few hundred lines, a
2-layer 64-wide GPT-2, seconds on one CPU thread. The loss falls, greedy continuations
through the serving runtime reproduce the pattern, the byte-level tokenizer round-trips any
text and keeps the chat markers whole, the chat template renders chats as the datasets do,
the saved directory is a plain Hugging Face one without pickles, and a cancelled run resumed
from its checkpoint ends with the weights of the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from openmaas.datasets.formats import render_chat
from openmaas.registry.detection import detect
from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
from openmaas.tasks.text_generation import GenerationParams
from openmaas.training.recipe import Checkpoint, TrainingContext, TrainingResult, TrainingStopped
from openmaas.training.recipes import RECIPES
from openmaas.training.recipes.causal_lm import IM_END, SPECIAL_TOKENS, TokenStream

SENTENCES = {
    "cat": "the cat sat on the mat.",
    "dog": "the dog slept on the rug.",
    "bird": "the bird sang in the tree.",
    "fish": "the fish swam in the pond.",
}
# Lines the model sees rarely, for the tokenizer; the round trip also covers bytes it never saw.
RARE = ("le café est très bon.", "日本語のテキスト。")
TINY: dict[str, Any] = {
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 64,
    "n_positions": 64,
    "vocab_size": 500,
    "n_epochs": 30,  # 300 steps; at 20, greedy decoding got one sentence of four wrong
    "batch_size": 4,
    "learning_rate": 3e-3,
    "dropout": 0.0,
    "patience": 0,
    "checkpoint_every_steps": 1000,
}
FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """A tiny network gains nothing from a second thread; one thread also makes the resumed
    run's arithmetic repeat the uninterrupted run's exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def corpus(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    lines = [rng.choice(list(SENTENCES.values())) for _ in range(n)]
    for i, rare in enumerate(RARE):
        lines[i * 7] = rare
    return [{"text": line} for line in lines]


@dataclass
class Job:
    ctx: TrainingContext
    metrics: list[tuple[int, int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)


def make_job(
    root: Path,
    *,
    resume_from: Checkpoint | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Job:
    """The same job every time (data, seed, hyperparameters); its work directory is shared
    by every run under `root`, as a resumed job's is."""
    examples = corpus(360, seed=0)
    job = Job(
        ctx=TrainingContext(
            job_id=root.name,
            task="text-generation",
            train=examples[:300],
            validation=examples[300:330],
            test=examples[330:],
            hyperparameters=RECIPES["gpt"].resolve(TINY, 300),
            seed=0,
            output_dir=root / "output",
            work_dir=root / "work",
            resume_from=resume_from,
            should_stop=should_stop,
        )
    )

    def on_checkpoint(directory: Path, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        store = root / "store"  # shared by every run under root, as the job store is
        stored = store / str(len(list(store.iterdir())) if store.is_dir() else 0)
        shutil.copytree(directory, stored)
        job.checkpoints.append(Checkpoint(stored, step, epoch, dict(metrics)))

    job.ctx.on_checkpoint = on_checkpoint
    job.ctx.on_metrics = lambda step, epoch, metrics: job.metrics.append(
        (step, epoch, dict(metrics))
    )
    return job


@dataclass(frozen=True)
class Trained:
    job: Job
    result: TrainingResult
    directory: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    job = make_job(tmp_path_factory.mktemp("gpt"))
    result = RECIPES["gpt"].train(job.ctx)
    return Trained(job, result, job.ctx.output_dir)


def greedy(directory: Path, prompt: str, max_tokens: int = 16) -> tuple[str, str | None]:
    """The served model's greedy completion of `prompt` and its finish reason."""
    source = ModelSource.for_directory(directory, task="text-generation", runtime="transformers")
    model = get_runtime("transformers").load(source, LoadOptions())
    try:
        deltas = list(
            model.generate(prompt, GenerationParams(max_tokens=max_tokens, temperature=0))
        )
    finally:
        model.unload()
    return "".join(d.text for d in deltas), deltas[-1].finish_reason


# -- learning ---------------------------------------------------------------------------------


def test_the_loss_falls_and_the_served_model_continues_the_pattern(trained: Trained) -> None:
    result, metrics = trained.result, trained.job.metrics
    steps = [m for _, _, m in metrics if "loss" in m]
    epochs = [m for _, _, m in metrics if "val_loss" in m]
    assert len(epochs) == TINY["n_epochs"]
    assert steps[-1]["loss"] < steps[0]["loss"] / 4
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert all(math.isclose(e["val_perplexity"], math.exp(e["val_loss"])) for e in epochs)
    # Uniform guessing over the vocabulary is a perplexity in the hundreds; the corpus leaves
    # one real choice (of 4 subjects) per 9-token line: about 4 ** (1 / 9) = 1.17.
    assert (result.task, result.runtime) == ("text-generation", "transformers")
    assert set(result.metrics) == {"loss", "perplexity"}
    assert result.metrics["perplexity"] < 1.6
    assert result.params["recipe"] == "gpt"
    assert result.report["split"] == "test"
    assert (
        result.trained_tokens
        == TINY["n_epochs"] * result.report["training"]["training_split_tokens"]
    )
    # Greedy decoding continues each subject with its own ending, and stops at the line's end.
    for subject, sentence in SENTENCES.items():
        text, finish = greedy(trained.directory, f"the {subject}")
        assert text == sentence.removeprefix(f"the {subject}")
        assert finish == "stop"  # at <|endoftext|>, which the model learned ends a line


# -- the tokenizer ----------------------------------------------------------------------------


def test_the_tokenizer_round_trips_any_text_and_keeps_the_markers_whole(
    trained: Trained,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(trained.directory)
    for text in (
        "the cat sat on the mat.",
        "le café est très bon.",
        "never seen: Ω ≈ naïve 🐈 ÆØÅ\ttabs\n  spaces , punctuation .",
    ):
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer(token)["input_ids"] == [expected_id]
    chat = render_chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(chat)["input_ids"])
    assert tokens.count("<|im_start|>") == 2
    assert tokens.count(IM_END) == 2
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|endoftext|>", "<|endoftext|>")
    assert tokenizer.model_max_length == TINY["n_positions"]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "where is the cat?"}],
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "where is the cat?"},
            {"role": "assistant", "content": "on the mat.\nasleep."},
        ],
    ],
)
def test_the_chat_template_renders_chats_as_the_datasets_do(
    trained: Trained, messages: list[dict[str, str]]
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(trained.directory)
    assert tokenizer.apply_chat_template(messages, tokenize=False) == render_chat(messages)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == render_chat(messages) + "\n<|im_start|>assistant\n"


# -- the saved directory ----------------------------------------------------------------------


def test_the_saved_directory_is_a_plain_hugging_face_causal_lm(trained: Trained) -> None:
    directory = trained.directory
    assert {p.name for p in directory.iterdir()} == FILES  # no pickles, nothing else
    detected = detect({p.name: p for p in directory.iterdir()})
    assert (detected.task, detected.runtime, detected.format) == (
        "text-generation",
        "transformers",
        "safetensors",
    )
    config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "<|im_start|>" in config["chat_template"]
    generation = json.loads((directory / "generation_config.json").read_text(encoding="utf-8"))
    assert generation["eos_token_id"] == [0, SPECIAL_TOKENS.index(IM_END)]

    # Stock transformers generates from it as our runtime does.
    network = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert type(network).__name__ == "GPT2LMHeadModel"
    assert (network.config.n_layer, network.config.n_embd) == (2, 64)
    assert network.config.vocab_size == len(tokenizer) <= TINY["vocab_size"]
    inputs = tokenizer("the bird", return_tensors="pt")
    output = network.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert tokenizer.decode(output[0], skip_special_tokens=True) == SENTENCES["bird"]


# -- resuming ---------------------------------------------------------------------------------


def test_a_cancelled_run_resumes_to_the_weights_of_an_uninterrupted_one(
    trained: Trained, tmp_path: Path
) -> None:
    def after_step_20() -> bool:  # asked before every step (and evaluation batch)
        return any(step >= 20 for step, _, _ in first.metrics)

    first = make_job(tmp_path, should_stop=after_step_20)
    with pytest.raises(TrainingStopped):
        RECIPES["gpt"].train(first.ctx)
    checkpoint = first.checkpoints[-1]
    assert checkpoint.step == 20
    assert (checkpoint.directory / "tokenizer.json").is_file()

    resumed = make_job(tmp_path, resume_from=checkpoint)
    result = RECIPES["gpt"].train(resumed.ctx)
    assert result.metrics == trained.result.metrics
    weights = load_file(str(resumed.ctx.output_dir / "model.safetensors"))
    expected = load_file(str(trained.directory / "model.safetensors"))
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)


# -- pieces -----------------------------------------------------------------------------------


def test_blocks_predict_every_id_after_the_first_once_at_any_offset() -> None:
    rows: Sequence[list[int]] = [[5, 6, 7], [8], [9, 10]]
    stream = TokenStream.of(rows, separator=0)
    assert stream.ids.tolist() == [5, 6, 7, 0, 8, 0, 9, 10, 0]
    blocks = stream.blocks(3)
    assert [b.tolist() for b in blocks] == [[5, 6, 7, 0], [0, 8, 0, 9], [9, 10, 0]]
    assert [i for b in blocks for i in b[1:].tolist()] == stream.ids[1:].tolist()
    # Cut 2 ids in, the stream wrapping around: the same number of blocks and targets.
    shifted = stream.blocks(3, offset=2)
    assert [b.tolist() for b in shifted] == [[7, 0, 8, 0], [0, 9, 10, 0], [0, 5, 6]]
    assert sum(len(b) - 1 for b in shifted) == stream.n_targets == 8


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"n_embd": 30, "n_head": 4}, "'n_embd' .* must be a multiple of n_head"),
        ({"vocab_size": 100}, "'vocab_size' must be at least 259"),
        ({"n_positions": 4}, "'n_positions' must be at least 8"),
        ({"dropout": 1.0}, r"'dropout' must be in \[0, 1\)"),
        ({"schedule": "step"}, "'schedule' must be one of linear, cosine, constant"),
        ({"optimizer": "sgd"}, "unknown hyperparameters for recipe 'gpt': optimizer"),
    ],
)
def test_bad_hyperparameters_are_refused_at_resolve(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RECIPES["gpt"].resolve(given, 100)
