"""The transformers runtime: conformance on tiny models built in this session (random weights,
real tokenizers), the packaged MiniLM against sentence-transformers, and the task details the
suite does not cover (pooling, offsets, stop sequences, languages)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from openmaas.errors import (
    InputTooLong,
    InvalidRequest,
    UnsupportedLanguage,
    UnsupportedSource,
    WrongTask,
)
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, get_runtime
from openmaas.runtimes.transformers import (
    DECODE_HOLDING_GIL_IDS,
    ENCODE_HOLDING_GIL_CHARS,
    MEMORY_OVERHEAD_FACTOR,
    TransformersRuntime,
)
from openmaas.runtimes.transformers_encoders import (
    EmbeddingModel,
    TaggedToken,
    group_entities,
    parse_tag,
)
from openmaas.runtimes.transformers_generation import (
    IncrementalDecoder,
    LanguageCodes,
    StopSequences,
)
from openmaas.tasks.names import Task
from openmaas.tasks.seq2seq import Seq2SeqParams
from openmaas.tasks.text_generation import GenerationDelta, GenerationParams
from openmaas.tasks.token_classification import Entity
from tests.runtimes import tiny_models
from tests.runtimes.conformance import TEXTS, check_conformance

SourceOpener = Callable[[str], ModelSource]
Loader = Callable[..., LoadedModel]

LONG_TEXT = " ".join(["The committee reviewed the annual budget proposal in detail."] * 40)
RUNTIME = TransformersRuntime()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread: with more, handing work between threads costs
    more than the work, and a busy test machine makes it far worse."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def source(directory: Path, task: str, **params: object) -> ModelSource:
    return ModelSource.for_directory(directory, task=task, runtime="transformers", params=params)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny checkpoint, built once: name -> directory."""
    root = tmp_path_factory.mktemp("tiny-transformers")
    bio = tiny_models.BIO_LABELS
    return {
        "encoder": tiny_models.build_bert(root / "encoder"),
        "classifier": tiny_models.build_bert(
            root / "classifier", head="sequence-classification", labels=("neg", "neu", "pos")
        ),
        "multi-label": tiny_models.build_bert(
            root / "multi-label",
            head="sequence-classification",
            labels=("toxic", "spam", "off-topic"),
            problem_type="multi_label_classification",
        ),
        "cross-encoder": tiny_models.build_bert(
            root / "cross-encoder", head="sequence-classification", labels=("relevance",)
        ),
        "tagger": tiny_models.build_bert(root / "tagger", head="token-classification", labels=bio),
        "gpt2": tiny_models.build_gpt2(root / "gpt2"),
        "bart": tiny_models.build_bart(root / "bart"),
        "nllb": tiny_models.build_nllb(root / "nllb"),
    }


@pytest.fixture(scope="session")
def load(tiny: dict[str, Path]) -> Loader:
    """`load("gpt2", "text-generation", pooling="cls")`: a tiny model, loaded once per
    (name, task, params)."""
    cache: dict[tuple[str, str, str], LoadedModel] = {}

    def loader(name: str, task: str, **params: object) -> LoadedModel:
        key = (name, task, json.dumps(params, sort_keys=True))
        if key not in cache:
            cache[key] = RUNTIME.load(source(tiny[name], task, **params), LoadOptions())
        return cache[key]

    return loader


# -- conformance ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("encoder", "embedding"),
        ("classifier", "text-classification"),
        ("multi-label", "text-classification"),
        ("cross-encoder", "rerank"),
        ("tagger", "token-classification"),
        ("gpt2", "text-generation"),
        ("bart", "summarization"),
        ("bart", "translation"),
        ("nllb", "translation"),
    ],
)
def test_tiny_models_pass_conformance(tiny: dict[str, Path], name: str, task: str) -> None:
    model = check_conformance(get_runtime("transformers"), source(tiny[name], task))
    assert model.tasks == {Task(task)}


def test_runtime_refuses_tasks_it_does_not_serve(tiny: dict[str, Path]) -> None:
    with pytest.raises(WrongTask, match="speech-recognition"):
        RUNTIME.load(source(tiny["encoder"], "speech-recognition"), LoadOptions())


def test_the_runtime_interface_does_not_import_torch() -> None:
    # The server starts without torch; only `get_runtime("transformers")` imports it.
    code = (
        "import sys, openmaas.runtimes.base; "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_threads_option_sets_torch_intra_op_threads(tiny: dict[str, Path]) -> None:
    before = torch.get_num_threads()
    try:
        RUNTIME.load(source(tiny["encoder"], "embedding"), LoadOptions(threads=2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_memory_estimate_is_the_weights_with_overhead(tiny: dict[str, Path]) -> None:
    weights = (tiny["encoder"] / "model.safetensors").stat().st_size
    estimate = RUNTIME.estimate_memory_bytes(source(tiny["encoder"], "embedding"))
    assert estimate == int(weights * MEMORY_OVERHEAD_FACTOR)


# -- embeddings -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> LoadedModel:
    return check_conformance(RUNTIME, source(tiny_models.minilm_path(), "embedding"))


def test_minilm_reads_pooling_and_limits_from_its_sentence_transformers_config(
    minilm: LoadedModel,
) -> None:
    assert isinstance(minilm, EmbeddingModel)
    assert (minilm.pooling.mode, minilm.pooling.normalize) == ("mean", True)
    assert minilm.embedding_dimensions == 384
    assert minilm.max_input_tokens == 256  # sentence_bert_config.json, not the tokenizer's 512
    assert minilm.count_tokens(["hello world", LONG_TEXT])[0] == 4  # [CLS] hello world [SEP]
    assert minilm.count_tokens([LONG_TEXT])[0] > 256, "counted before truncation"


def test_minilm_matches_sentence_transformers(minilm: LoadedModel) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = [*TEXTS, "", "Où est la gare ?", LONG_TEXT, "🙂 emoji and ünïcödé"]
    reference = sentence_transformers.SentenceTransformer(
        str(tiny_models.minilm_path()), device="cpu", local_files_only=True
    ).encode(texts, normalize_embeddings=True)
    ours = minilm.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() > 0.999, cosine


def test_catalog_minilm_loads_through_the_registry(catalog_source: SourceOpener) -> None:
    model = check_conformance(RUNTIME, catalog_source("all-minilm-l6-v2"))
    assert model.embedding_dimensions == 384


def test_length_sorted_sub_batches_return_input_order(load: Loader) -> None:
    model = load("encoder", "embedding")
    # More texts than one sub-batch holds, with lengths shuffled against input order.
    rng = np.random.default_rng(0)
    words = TEXTS[3].split()
    texts = [" ".join(words[: int(n)]) for n in rng.integers(1, len(words), size=150)]
    batch = model.embed(texts)
    np.testing.assert_allclose(model.embed(texts[::-1])[::-1], batch, rtol=1e-4, atol=1e-5)
    for i in range(0, len(texts), 10):
        np.testing.assert_allclose(model.embed([texts[i]])[0], batch[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_pooling_from_params_matches_the_network(
    tiny: dict[str, Path], load: Loader, pooling: str
) -> None:
    model = load("encoder", "embedding", pooling=pooling)
    text = "Pooling picks one vector per text."
    tokenizer = AutoTokenizer.from_pretrained(tiny["encoder"])
    network = AutoModel.from_pretrained(tiny["encoder"])  # in eval mode
    with torch.inference_mode():
        hidden = network(**tokenizer([text], return_tensors="pt")).last_hidden_state[0]
    expected = {"mean": hidden.mean(0), "cls": hidden[0], "max": hidden.max(0).values}[pooling]
    np.testing.assert_allclose(model.embed([text])[0], expected.numpy(), rtol=1e-4, atol=1e-5)
    assert np.linalg.norm(model.embed([text])[0]) != pytest.approx(1.0)


def test_params_ask_for_l2_normalization(load: Loader) -> None:
    vectors = load("encoder", "embedding", pooling="mean", normalize="l2").embed(list(TEXTS))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_invalid_pooling_params_are_refused(tiny: dict[str, Path]) -> None:
    with pytest.raises(InvalidRequest, match="pooling"):
        RUNTIME.load(source(tiny["encoder"], "embedding", pooling="median"), LoadOptions())


def test_sentence_transformers_config_wins_and_sets_the_limit(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    directory = shutil.copytree(tiny["encoder"], tmp_path / "st")
    tiny_models.write_sentence_transformers_config(
        directory, pooling="cls", normalize=True, max_seq_length=16
    )
    model = RUNTIME.load(source(directory, "embedding", pooling="max"), LoadOptions())
    assert isinstance(model, EmbeddingModel)
    assert (model.pooling.mode, model.pooling.normalize) == ("cls", True)
    assert model.max_input_tokens == 16
    # Truncation at 16 tokens: what comes after does not change the vector.
    a, b = model.embed([LONG_TEXT, LONG_TEXT + " And then something else entirely."])
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert model.count_tokens([LONG_TEXT])[0] > 16


def test_sentence_transformers_modules_that_change_vectors_are_refused(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    directory = shutil.copytree(tiny["encoder"], tmp_path / "dense")
    tiny_models.write_sentence_transformers_config(directory, pooling="mean", normalize=False)
    modules = json.loads((directory / "modules.json").read_text())
    modules.append(
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (directory / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedSource, match="Dense"):
        RUNTIME.load(source(directory, "embedding"), LoadOptions())


def test_newer_sentence_transformers_pooling_config(tiny: dict[str, Path], tmp_path: Path) -> None:
    directory = shutil.copytree(tiny["encoder"], tmp_path / "st6")
    tiny_models.write_sentence_transformers_config(directory, pooling="mean", normalize=False)
    config = {"embedding_dimension": 32, "pooling_mode": "max", "include_prompt": True}
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(config))
    model = RUNTIME.load(source(directory, "embedding"), LoadOptions())
    assert isinstance(model, EmbeddingModel)
    assert model.pooling.mode == "max"
    config["pooling_mode"] = ["mean", "max"]
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedSource, match=r"mean\+max"):
        RUNTIME.load(source(directory, "embedding"), LoadOptions())


# -- classification and rerank ----------------------------------------------------------------


def test_classifier_scores_every_label_in_id_order(load: Loader) -> None:
    model = load("classifier", "text-classification")
    assert model.labels == ("neg", "neu", "pos")
    for ranking in model.classify(list(TEXTS)):
        assert sum(r.score for r in ranking) == pytest.approx(1.0)


def test_multi_label_classifier_scores_labels_independently(load: Loader) -> None:
    rankings = load("multi-label", "text-classification").classify(list(TEXTS))
    assert all(0 < r.score < 1 for ranking in rankings for r in ranking)
    assert any(sum(r.score for r in ranking) != pytest.approx(1.0) for ranking in rankings)


def test_cross_encoder_serves_rerank_but_not_classification(
    tiny: dict[str, Path], load: Loader
) -> None:
    model = load("cross-encoder", "rerank")
    assert model.tasks == {Task.RERANK}
    with pytest.raises(WrongTask):
        model.classify(["x"])
    with pytest.raises(WrongTask, match="rerank"):
        RUNTIME.load(source(tiny["cross-encoder"], "text-classification"), LoadOptions())
    pairs = [("what is a fox?", text) for text in TEXTS]
    scores = model.score_pairs(pairs)
    assert all(0 < s < 1 for s in scores)
    singles = [model.score_pairs([pair])[0] for pair in pairs]
    np.testing.assert_allclose(scores, singles, rtol=1e-4)
    assert model.score_pairs([]) == []


def test_a_many_label_classifier_cannot_rerank(tiny: dict[str, Path]) -> None:
    with pytest.raises(WrongTask, match="3 labels"):
        RUNTIME.load(source(tiny["classifier"], "rerank"), LoadOptions())


# -- token classification ---------------------------------------------------------------------

NER_TEXT = "Angela Merkel met Schwarzenegger in  Paris, unbelievably!"


def tagger_forced_to(tmp_path: Path, label: str) -> LoadedModel:
    directory = tiny_models.build_bert(
        tmp_path / label,
        head="token-classification",
        labels=tiny_models.BIO_LABELS,
        forced_label=label,
    )
    return RUNTIME.load(source(directory, "token-classification"), LoadOptions())


def test_every_word_tagged_b_is_its_own_entity_with_exact_offsets(tmp_path: Path) -> None:
    [entities] = tagger_forced_to(tmp_path, "B-PER").extract_entities([NER_TEXT])
    words = ["Angela", "Merkel", "met", "Schwarzenegger", "in", "Paris", ",", "unbelievably", "!"]
    assert [e.text for e in entities] == words  # multi-subword words are one entity each
    for entity in entities:
        assert NER_TEXT[entity.start : entity.end] == entity.text
        assert entity.label == "PER"
        assert entity.score == pytest.approx(0.9987, abs=1e-4)
    assert entities[3] == Entity("Schwarzenegger", "PER", 18, 32, entities[3].score)


def test_words_tagged_i_merge_into_one_span(tmp_path: Path) -> None:
    [entities, empty] = tagger_forced_to(tmp_path, "I-LOC").extract_entities([NER_TEXT, ""])
    assert [(e.text, e.label, e.start, e.end) for e in entities] == [
        (NER_TEXT, "LOC", 0, len(NER_TEXT))
    ]
    assert empty == []


def test_byte_level_offsets_leave_out_the_leading_space(tmp_path: Path) -> None:
    directory = tiny_models.build_byte_level_tagger(tmp_path / "bpe", forced_label="B-PER")
    model = RUNTIME.load(source(directory, "token-classification"), LoadOptions())
    [entities] = model.extract_entities([NER_TEXT])
    assert [e.text for e in entities][:4] == ["Angela", "Merkel", "met", "Schwarzenegger"]
    for entity in entities:
        assert NER_TEXT[entity.start : entity.end] == entity.text
        assert entity.text == entity.text.strip()


def test_outside_tags_give_no_entities(tmp_path: Path) -> None:
    assert tagger_forced_to(tmp_path, "O").extract_entities([NER_TEXT]) == [[]]


def tagged(text: str, labels: list[str], *, split: int | None = None) -> list[TaggedToken]:
    """One token per whitespace word (the word at `split` as two subwords), scored 0.5."""
    tokens = []
    start = 0
    for word, (piece, label) in enumerate(zip(text.split(" "), labels, strict=True)):
        end = start + len(piece)
        if word == split:
            middle = start + len(piece) // 2
            tokens.append(TaggedToken(word, start, middle, label, 0.5))
            tokens.append(TaggedToken(word, middle, end, "O", 0.9))  # ignored: not the first
        else:
            tokens.append(TaggedToken(word, start, end, label, 0.5))
        start = end + 1
    return tokens


def spans(text: str, labels: list[str], *, split: int | None = None) -> list[tuple[str, str]]:
    return [(e.text, e.label) for e in group_entities(text, tagged(text, labels, split=split))]


def test_bio_grouping() -> None:
    text = "Barack Obama met Angela Merkel in Paris"
    labels = ["B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC"]
    assert spans(text, labels) == [
        ("Barack Obama", "PER"),
        ("Angela Merkel", "PER"),
        ("Paris", "LOC"),
    ]
    # B starts a new entity even after one of the same type; I of another type does too.
    assert spans("a b c", ["B-PER", "B-PER", "I-LOC"]) == [("a", "PER"), ("b", "PER"), ("c", "LOC")]
    # A stray I (no B before it) still opens an entity.
    assert spans("a b c", ["O", "I-ORG", "I-ORG"]) == [("b c", "ORG")]
    # A word's label is its first subword's; the score averages every token.
    [entity] = group_entities("Schwarzenegger", tagged("Schwarzenegger", ["B-PER"], split=0))
    assert entity.text == "Schwarzenegger"
    assert entity.score == pytest.approx(0.7)


def test_plain_and_bioes_grouping() -> None:
    assert spans("New York is big", ["LOC", "LOC", "O", "O"]) == [("New York", "LOC")]
    labels = ["B-LOC", "E-LOC", "S-LOC", "S-PER"]
    assert spans("New York Paris Bob", labels) == [
        ("New York", "LOC"),
        ("Paris", "LOC"),
        ("Bob", "PER"),
    ]
    assert parse_tag("O") == (None, None)
    assert parse_tag("B-PER") == ("B", "PER")
    assert parse_tag("MISC") == (None, "MISC")


# -- causal generation ------------------------------------------------------------------------


def run(model: LoadedModel, prompt: str, **params: object) -> tuple[str, list[GenerationDelta]]:
    deltas = list(model.generate(prompt, GenerationParams(**params)))  # type: ignore[arg-type]
    return "".join(d.text for d in deltas), deltas


def test_greedy_decoding_matches_transformers_generate(tiny: dict[str, Path], load: Loader) -> None:
    model = load("gpt2", "text-generation")
    tokenizer = AutoTokenizer.from_pretrained(tiny["gpt2"])
    network = AutoModelForCausalLM.from_pretrained(tiny["gpt2"])  # in eval mode
    prompt = "The quick brown fox"
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        # transformers annotates `generate` against a private protocol mypy cannot match.
        ids = network.generate(**inputs, max_new_tokens=12, do_sample=False)  # type: ignore[misc]
    expected = tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    text, deltas = run(model, prompt, max_tokens=12, temperature=0.0)
    assert text == expected
    assert deltas[-1].prompt_tokens == inputs["input_ids"].shape[1]


def sampled_reference(model: LoadedModel) -> tuple[str, str | None]:
    """A sampled completion, and how it ended, for the stop-sequence tests to cut."""
    text, deltas = run(model, "My friend", max_tokens=40, temperature=1.0, seed=3)
    assert len(text) > 20, "the reference needs text to cut"
    return text, deltas[-1].finish_reason


def test_stop_sequence_cuts_the_output(load: Loader) -> None:
    model = load("gpt2", "text-generation")
    reference, _ = sampled_reference(model)
    stop = reference[12:16]
    expected = reference[: reference.index(stop)]
    text, deltas = run(
        model, "My friend", max_tokens=40, temperature=1.0, seed=3, stop=(stop, "\x00")
    )
    assert text == expected
    assert deltas[-1].finish_reason == "stop"
    assert all(stop not in d.text for d in deltas)
    assert all(d.finish_reason is None for d in deltas[:-1])


def test_text_that_might_start_a_stop_sequence_is_held_then_released(load: Loader) -> None:
    model = load("gpt2", "text-generation")
    reference, finish_reason = sampled_reference(model)
    # The generation ends with what could be the start of this stop sequence; it never
    # completes, so that text is held to the end, then released.
    stop = reference[-4:] + "\x00"
    text, deltas = run(model, "My friend", max_tokens=40, temperature=1.0, seed=3, stop=(stop,))
    assert text == reference
    assert deltas[-1].finish_reason == finish_reason
    assert deltas[-1].text == reference[-4:]


def test_max_tokens_ends_with_length(load: Loader) -> None:
    _, deltas = run(load("gpt2", "text-generation"), "The moon", max_tokens=7, temperature=0.0)
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].completion_tokens == 7
    assert [d.completion_tokens for d in deltas] == sorted(d.completion_tokens for d in deltas)


def test_max_tokens_is_clamped_to_the_context(load: Loader) -> None:
    model = load("gpt2", "text-generation")
    prompt = " ".join(["moon"] * 60)
    [prompt_tokens] = model.count_tokens([prompt])
    assert prompt_tokens < tiny_models.GENERATOR_CONTEXT
    _, deltas = run(model, prompt, max_tokens=50, temperature=0.0)
    assert deltas[-1].completion_tokens == tiny_models.GENERATOR_CONTEXT - prompt_tokens
    assert deltas[-1].finish_reason == "length"


def test_a_prompt_longer_than_the_context_is_refused_before_streaming(load: Loader) -> None:
    model = load("gpt2", "text-generation")
    prompt = " ".join(["moon"] * 100)
    [prompt_tokens] = model.count_tokens([prompt])
    with pytest.raises(InputTooLong) as caught:
        model.generate(prompt, GenerationParams())  # raised by the call, not the first step
    assert str(prompt_tokens) in caught.value.message
    assert str(tiny_models.GENERATOR_CONTEXT) in caught.value.message


def test_invalid_sampling_params_are_refused(load: Loader) -> None:
    model = load("gpt2", "text-generation")
    for params in (GenerationParams(top_p=0.0), GenerationParams(temperature=-1.0)):
        with pytest.raises(InvalidRequest):
            model.generate("Hi", params)


def test_sampling_at_the_edges_of_its_ranges_draws_a_token(load: Loader) -> None:
    # Issue 13: a top_p or temperature that rounds to 0 in float32 left nothing to draw, and
    # a seed past 64 bits overflowed the generator; both raised a 500.
    model = load("gpt2", "text-generation")
    greedy, _ = run(model, "The old man", max_tokens=5, temperature=0.0)
    assert run(model, "The old man", max_tokens=5, top_p=1e-300, seed=1)[0] == greedy
    assert run(model, "The old man", max_tokens=5, temperature=1e-300, seed=1)[0] == greedy
    run(model, "The old man", max_tokens=2, seed=2**64 - 1)
    with pytest.raises(InvalidRequest):
        model.generate("Hi", GenerationParams(seed=2**64))


def test_a_tiny_nucleus_samples_the_greedy_choice(load: Loader) -> None:
    model = load("gpt2", "text-generation")
    greedy, _ = run(model, "The old man", max_tokens=15, temperature=0.0)
    nucleus, _ = run(model, "The old man", max_tokens=15, temperature=1.5, top_p=1e-6, seed=5)
    assert nucleus == greedy


def test_seeds_make_samples_repeatable(load: Loader) -> None:
    model = load("gpt2", "text-generation")
    texts = {seed: run(model, "A lazy dog", max_tokens=20, seed=seed)[0] for seed in (1, 2)}
    assert run(model, "A lazy dog", max_tokens=20, seed=1)[0] == texts[1]
    assert texts[1] != texts[2]


def test_incremental_decoding_releases_whole_characters(tiny: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny["gpt2"])
    text = " zwölf Äpfel im 東京の街 🙂 café"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) > len(text.split()), "multi-byte characters span several tokens"
    decoder = IncrementalDecoder(tokenizer, tokenizer("My friend")["input_ids"])
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert "" in pieces, "some tokens end inside a character and wait for the next"


def test_stop_sequences_report_what_is_unsettled() -> None:
    stops = StopSequences.of(["\n\n", "END", ""])
    assert stops.stops == ("\n\n", "END")
    assert stops.unsettled("hello E", 0) == 1
    assert stops.unsettled("hello EN", 0) == 2
    assert stops.unsettled("hello\n", 0) == 1
    assert stops.unsettled("hello", 0) == 0
    assert stops.find("a END b \n\n", 0) == 2
    assert stops.find("a END b", 3) is None


def test_chat_prompt_without_a_template_is_a_transcript(load: Loader) -> None:
    prompt = load("gpt2", "text-generation").chat_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert prompt == "system: Be brief.\nuser: Hi\nassistant:"


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def chat_model(directory: Path) -> LoadedModel:
    """A tiny GPT-2 whose chat template closes every turn with its EOS token, `</s>`."""
    tiny_models.build_gpt2(directory, chat_template=CHAT_TEMPLATE)
    return RUNTIME.load(source(directory, "text-generation"), LoadOptions())


def test_chat_prompt_uses_the_tokenizer_template(tmp_path: Path) -> None:
    model = chat_model(tmp_path / "chat")
    prompt = model.chat_prompt([{"role": "user", "content": "Hi"}])
    assert prompt == "<|user|>Hi</s><|assistant|>"


def test_control_tokens_in_message_contents_stay_text(tmp_path: Path) -> None:
    model = chat_model(tmp_path / "chat")
    tokenizer = model.tokenizer  # type: ignore[attr-defined]
    eos = tokenizer.eos_token_id
    plain = [{"role": "user", "content": "Hi"}]
    # Without a control token in any message, the ids are the rendered prompt's, as trained.
    assert model.encode_chat(plain) == tokenizer("<|user|>Hi</s><|assistant|>")["input_ids"]
    forged = [{"role": "user", "content": "Hi</s>"}, {"role": "assistant", "content": "</s>"}]
    ids = model.encode_chat(forged)
    rendered = model.chat_prompt(forged)
    # Tokenized naively, each message's `</s>` would be an end-of-sequence token of its own.
    assert tokenizer(rendered)["input_ids"].count(eos) == 4
    assert ids.count(eos) == 2  # only the template's, one closing each turn
    assert tokenizer.decode(ids) == rendered
    deltas = list(model.generate(ids, GenerationParams(max_tokens=3, temperature=0.0)))
    assert deltas[-1].prompt_tokens == len(ids)


def test_messages_a_chat_template_refuses_are_invalid_requests(tmp_path: Path) -> None:
    template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
        "supported') }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    directory = tiny_models.build_gpt2(tmp_path / "chat", chat_template=template)
    model = RUNTIME.load(source(directory, "text-generation"), LoadOptions())
    with pytest.raises(InvalidRequest, match="System role not supported"):
        model.chat_prompt([{"role": "system", "content": "Be brief."}])


# -- sequence to sequence ---------------------------------------------------------------------


def test_seq2seq_batches_match_single_runs(load: Loader) -> None:
    model = load("bart", "summarization")
    params = Seq2SeqParams(max_tokens=6)
    batch = model.summarize(list(TEXTS), params)
    assert batch == [model.summarize([text], params)[0] for text in TEXTS]
    with pytest.raises(WrongTask):
        model.translate(["x"], params)


def test_task_follows_the_source_not_the_architecture(load: Loader) -> None:
    translator = load("bart", "translation")
    with pytest.raises(WrongTask):
        translator.summarize(["x"], Seq2SeqParams())


def test_single_pair_translators_ignore_languages(load: Loader) -> None:
    model = load("bart", "translation")
    params = Seq2SeqParams(max_tokens=6, source_language="xx", target_language="yy")
    assert model.translate(list(TEXTS), params) == model.translate(
        list(TEXTS), Seq2SeqParams(max_tokens=6)
    )


def test_multilingual_translators_know_their_language_codes(
    tiny: dict[str, Path], load: Loader
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny["nllb"])
    codes = LanguageCodes.of(tokenizer)
    assert len(codes.token_ids) > 200
    assert codes.token_ids["fra_Latn"] == tokenizer.convert_tokens_to_ids("fra_Latn")
    assert LanguageCodes.of(AutoTokenizer.from_pretrained(tiny["bart"])).token_ids == {}

    model = load("nllb", "translation")
    text = ["The quick brown fox jumps over the river."]

    def translate(target: str, source: str | None = None) -> list[str]:
        params = Seq2SeqParams(max_tokens=8, source_language=source, target_language=target)
        return model.translate(text, params)

    # The forced first token, and the input's language token, steer the output.
    french = translate("fra_Latn")
    assert french != translate("deu_Latn")
    assert translate("fra_Latn", source="deu_Latn") != french
    # A request without a source language gets the default, not the last one asked for.
    assert translate("fra_Latn") == french == translate("fra_Latn", source="eng_Latn")

    with pytest.raises(UnsupportedLanguage) as caught:
        translate("klingon")
    assert "deu_Latn, dik_Latn" in caught.value.message
    assert caught.value.param == "target_language"
    with pytest.raises(UnsupportedLanguage, match="'xx'"):
        translate("fra_Latn", source="xx")


# -- long inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["encoder", "gpt2"])  # WordPiece with clean-up; byte-level BPE
def test_long_token_id_inputs_decode_as_short_ones_do(load: Loader, name: str) -> None:
    # Past DECODE_HOLDING_GIL_IDS the runtime decodes through the batch call, which lets
    # other threads run: the text must be the one `decode` gives.
    model = load(name, "embedding" if name == "encoder" else "text-generation")
    tokenizer = model.counting_tokenizer  # type: ignore[attr-defined]
    ids = tokenizer(" ".join(tiny_models.training_lines()) + " don 't , ok .")["input_ids"]
    ids = (ids * (DECODE_HOLDING_GIL_IDS // len(ids) + 2))[: DECODE_HOLDING_GIL_IDS + 10]
    expected = tokenizer.decode(ids, skip_special_tokens=True)
    assert model.detokenize(ids) == expected


def test_long_texts_count_as_short_ones_do(load: Loader) -> None:
    model = load("encoder", "embedding")
    text = "The committee met. " * (ENCODE_HOLDING_GIL_CHARS // 19 + 10)
    expected = len(model.tokenizer(text)["input_ids"])  # type: ignore[attr-defined]
    assert model.count_tokens([text]) == [expected]
