"""word2vec (Mikolov et al. 2013) trained with gensim on the texts of an `embedding` job:
skip-gram or CBOW with negative sampling over the words of `openmaas.word_vectors.tokenizer`.
Served by the `word2vec` runtime on /v1/embeddings, a text's embedding being the mean of its
known words' vectors (`openmaas.runtimes.word_vectors`).

Each example is one sentence to gensim, so context windows never span two examples; an
example longer than gensim's 10,000-word limit is cut into pieces of that length instead of
being truncated. The model trains one gensim `train` call per epoch, with the learning rate
decaying linearly from `learning_rate` to `min_learning_rate` across all epochs as a single
call would: gensim resets its loss at every call, so each call's loss is that epoch's (no
callback has to take differences of a running total), and each epoch ends in a checkpoint
(the vectors, the output weights and gensim's random state) from which a resumed job ends
with the vectors an uninterrupted one would have. With `workers` 1 (the default) a run is
reproducible from its seed; more threads train faster on large corpora, in an order the OS
decides, so no two runs are alike. gensim trains on the CPU, whatever the job's device.

Registered metrics: `analogy_accuracy` on gensim's bundled questions-words.txt (19,544
"a is to b as c is to ?" questions of Mikolov et al.), over the questions whose four words
are among the `analogy_vocab_size` most frequent; `analogy_coverage`, the share of all
questions that is; and `test_word_coverage`, the share of the test split's words that have
a vector. The validation split is not used (nothing is tuned on it): a job with
`validation_split` 0 trains on those texts too.

Measured on 2 CPU cores, on 270 articles of gensim's Lee corpus (55,000 words): the
defaults (skip-gram, 100 dimensions, 5 epochs) train and evaluate in 1.6 s, CBOW in 0.4 s.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from openmaas.training.hyperparameters import (
    choice,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from openmaas.training.recipe import Recipe, TrainingContext, TrainingResult, TrainingStopped
from openmaas.word_vectors.saved import (
    NORMALIZATIONS,
    RUNTIME,
    TASK,
    WordVectors,
    load_word_vectors,
    save_word_vectors,
)
from openmaas.word_vectors.tokenizer import WordTokenizer

if TYPE_CHECKING:
    from gensim.models import KeyedVectors, Word2Vec

ARCHITECTURES = ("skipgram", "cbow")
DEFAULTS: dict[str, Any] = {
    "architecture": "skipgram",  # or "cbow": predicts a word from the mean of its window
    "vector_size": 100,  # dimensions of every vector
    "window": 5,  # words each side of the predicted one (gensim samples 1..window per word)
    "min_count": 5,  # occurrences in the training texts a word needs to get a vector
    "max_vocab_size": 1_000_000,  # words kept, most frequent first (raises min_count to fit)
    "negative": 5,  # noise words drawn per prediction (negative sampling)
    "sample": 1e-3,  # words more frequent than this share of the corpus are downsampled
    "n_epochs": 5,  # passes over the training texts
    "learning_rate": 0.025,  # gensim's alpha at the start, decayed linearly
    "min_learning_rate": 1e-4,  # ... down to this at the end of the last epoch
    "workers": 1,  # training threads; 1 is reproducible from the seed
    "normalize": "l2",  # served embeddings at unit length; "none" keeps the mean as it is
    "analogy_vocab_size": 30_000,  # most frequent words the analogy test uses; 0 skips it
}
# gensim trains on at most this many words of one sentence (its MAX_WORDS_IN_BATCH).
MAX_SENTENCE_WORDS = 10_000
CHECKPOINT_DIRECTORY = "checkpoint"
STATE_FILE = "training_state.json"
OUTPUT_WEIGHTS_FILE = "output_weights.safetensors"
QUESTIONS_FILE = "test/test_data/questions-words.txt"  # inside the gensim package
ANALOGY_BATCH = 256  # questions per matrix product: 256 x 30,000 words of float32 is 31 MB


class Word2VecRecipe(Recipe):
    name = "word2vec"
    tasks = (TASK,)
    description = "word2vec (skip-gram or CBOW, gensim): word vectors served as text embeddings"

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def resolve(self, given: Mapping[str, Any], n_examples: int) -> dict[str, Any]:
        hp = super().resolve(given, n_examples)
        choice(hp, "architecture", ARCHITECTURES)
        sizes = ("vector_size", "window", "min_count", "max_vocab_size", "negative", "n_epochs")
        for name in (*sizes, "workers"):
            positive_int(hp, name)
        non_negative_float(hp, "sample")
        if positive_float(hp, "min_learning_rate") > positive_float(hp, "learning_rate"):
            raise ValueError(
                "hyperparameter 'min_learning_rate' must not exceed 'learning_rate' "
                f"({hp['min_learning_rate']} > {hp['learning_rate']})"
            )
        choice(hp, "normalize", NORMALIZATIONS)
        non_negative_int(hp, "analogy_vocab_size")
        return hp

    def train(self, ctx: TrainingContext) -> TrainingResult:
        from gensim.models import Word2Vec

        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        tokenizer = WordTokenizer()
        sentences = training_sentences(ctx.train, tokenizer)
        model = Word2Vec(
            vector_size=hp["vector_size"],
            window=hp["window"],
            min_count=hp["min_count"],
            max_final_vocab=hp["max_vocab_size"],
            sg=1 if hp["architecture"] == "skipgram" else 0,
            hs=0,
            negative=hp["negative"],
            sample=hp["sample"],
            alpha=hp["learning_rate"],
            min_alpha=hp["min_learning_rate"],
            seed=ctx.seed,
            workers=hp["workers"],
            compute_loss=True,
        )
        model.build_vocab(sentences)
        if len(model.wv) == 0:
            raise ValueError(
                f"no word occurs {hp['min_count']} times in the training texts: lower "
                "min_count, or train on more text"
            )
        ctx.message(f"vocabulary: {len(model.wv)} words from {model.corpus_total_words} in all")
        first_epoch = 0
        if ctx.resume_from is not None:
            first_epoch = restore_checkpoint(model, ctx.resume_from.directory)
        n_epochs = positive_int(hp, "n_epochs")
        ctx.plan_steps(n_epochs)  # a step is an epoch here
        checkpoint = ctx.work_dir / CHECKPOINT_DIRECTORY
        for epoch in range(first_epoch, n_epochs):
            if ctx.should_stop():
                raise TrainingStopped(f"stopped before epoch {epoch + 1}")
            corpus = StoppableCorpus(sentences, ctx.should_stop)
            trained_words, _ = model.train(
                corpus,
                total_examples=len(sentences),
                epochs=1,
                start_alpha=learning_rate_at(hp, epoch, n_epochs),
                end_alpha=learning_rate_at(hp, epoch + 1, n_epochs),
                compute_loss=True,
            )
            if corpus.stopped:
                raise TrainingStopped(f"stopped during epoch {epoch + 1}")
            # gensim sums the loss of every prediction; per trained word (after downsampling)
            # it compares across corpora and epochs.
            loss = float(model.get_latest_training_loss()) / max(1, trained_words)
            metrics = {"train_loss": loss}
            ctx.report_metrics(step=epoch + 1, epoch=epoch + 1, metrics=metrics)
            save_checkpoint(model, checkpoint, tokenizer, hp, epoch=epoch + 1)
            ctx.save_checkpoint(checkpoint, step=epoch + 1, epoch=epoch + 1, metrics=metrics)

        metrics = {
            **analogy_scores(
                model.wv.index_to_key, model.wv.vectors, hp["analogy_vocab_size"], ctx.should_stop
            ),
            **word_coverage(model.wv, ctx.test, tokenizer),
        }
        ctx.message(", ".join(f"{name}={value:.4g}" for name, value in metrics.items()))
        save_word_vectors(ctx.output_dir, word_vectors(model, tokenizer, hp))
        return TrainingResult(
            task=TASK,
            runtime=RUNTIME,
            metrics=metrics,
            params={
                "architecture": hp["architecture"],
                "dimensions": hp["vector_size"],
                "vocabulary_size": len(model.wv),
                "normalize": hp["normalize"],
            },
            trained_tokens=int(model.corpus_total_words) * n_epochs,
        )


# -- the corpus -------------------------------------------------------------------------------


def training_sentences(
    examples: Sequence[Mapping[str, Any]], tokenizer: WordTokenizer
) -> list[list[str]]:
    """Each example's words, cut in pieces gensim trains whole; examples without words are
    left out."""
    sentences: list[list[str]] = []
    for i, example in enumerate(examples):
        text = example.get("text")
        if not isinstance(text, str):
            raise ValueError(
                f"training example {i} needs a string 'text' (embedding examples "
                "are {'text': ...})"
            )
        words = tokenizer.words(text)
        for start in range(0, len(words), MAX_SENTENCE_WORDS):
            sentences.append(words[start : start + MAX_SENTENCE_WORDS])
    if not sentences:
        raise ValueError("the training texts hold no words (letters or digits)")
    return sentences


class StoppableCorpus:
    """One pass over the sentences that ends early once `should_stop` says so (then `stopped`
    is set). gensim reads it from its producer thread; the worker's `should_stop` is safe
    there (a flag, refreshed from the database at most every 0.5 s)."""

    def __init__(self, sentences: Sequence[list[str]], should_stop: Callable[[], bool]) -> None:
        self.sentences = sentences
        self.should_stop = should_stop
        self.stopped = False

    def __iter__(self) -> Iterator[list[str]]:
        for sentence in self.sentences:
            if self.should_stop():
                self.stopped = True
                return
            yield sentence


def learning_rate_at(hp: Mapping[str, Any], epoch: float, n_epochs: int) -> float:
    """gensim's linear decay, at the start of `epoch` (0-based) of `n_epochs`."""
    start, end = float(hp["learning_rate"]), float(hp["min_learning_rate"])
    return start - (start - end) * epoch / n_epochs


# -- checkpoints ------------------------------------------------------------------------------


def word_vectors(model: Word2Vec, tokenizer: WordTokenizer, hp: Mapping[str, Any]) -> WordVectors:
    """The model's input vectors in the servable format."""
    words = list(model.wv.index_to_key)
    return WordVectors(
        words=words,
        counts=[int(model.wv.get_vecattr(word, "count")) for word in words],
        vectors=np.asarray(model.wv.vectors, dtype=np.float32),
        tokenizer=tokenizer,
        normalize=str(hp["normalize"]),
        extra={"recipe": "word2vec", "architecture": hp["architecture"]},
    )


def save_checkpoint(
    model: Word2Vec, directory: Path, tokenizer: WordTokenizer, hp: Mapping[str, Any], *, epoch: int
) -> None:
    """A servable directory (the vectors so far) plus what training needs to go on: the
    output weights and gensim's random state, as safetensors and JSON."""
    from safetensors.numpy import save_file

    shutil.rmtree(directory, ignore_errors=True)
    save_word_vectors(directory, word_vectors(model, tokenizer, hp))
    save_file(
        {"syn1neg": np.asarray(model.syn1neg, dtype=np.float32)},
        str(directory / OUTPUT_WEIGHTS_FILE),
    )
    kind, keys, position, has_gauss, cached_gaussian = model.random.get_state(legacy=True)
    state = {
        "epoch": epoch,
        "random_state": {
            "kind": kind,
            "keys": [int(key) for key in keys],
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    (directory / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")


def restore_checkpoint(model: Word2Vec, directory: Path) -> int:
    """Load a checkpoint into `model` (its vocabulary built already); the epochs it holds."""
    from safetensors.numpy import load_file

    saved = load_word_vectors(directory)
    if list(saved.words) != list(model.wv.index_to_key):
        # The job's split is the same on every run, so this means the files changed.
        raise ValueError("the checkpoint's vocabulary differs from the training texts' one")
    model.wv.vectors[:] = saved.vectors
    model.syn1neg[:] = load_file(str(directory / OUTPUT_WEIGHTS_FILE))["syn1neg"]
    state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    random = state["random_state"]
    model.random.set_state(
        (
            random["kind"],
            np.asarray(random["keys"], dtype=np.uint32),
            random["position"],
            random["has_gauss"],
            random["cached_gaussian"],
        )
    )
    return int(state["epoch"])


# -- metrics ----------------------------------------------------------------------------------


def analogy_scores(
    words: Sequence[str],
    vectors: npt.NDArray[np.float32],
    vocab_size: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, float]:
    """`analogy_accuracy` (left out when no question could be asked) and `analogy_coverage`
    on gensim's questions-words.txt, among the `vocab_size` most frequent words (`words` are
    in frequency order); nothing when `vocab_size` is 0.

    The answer to "a is to b as c is to ?" is the word nearest (by cosine) to b - a + c, the
    three question words excluded: 3CosAdd, exactly what gensim's
    `KeyedVectors.evaluate_word_analogies(case_insensitive=True)` computes, but a batch of
    questions per matrix product. gensim asks one question at a time, which takes minutes
    over a 30,000-word vocabulary (113 s measured) where this takes seconds."""
    if vocab_size == 0:
        return {}
    top = min(vocab_size, len(words))
    rows: dict[str, int] = {}
    for row in reversed(range(top)):  # case variants: the most frequent one answers
        rows[words[row].upper()] = row
    questions = 0
    asked: list[list[int]] = []
    for line in _analogy_questions():
        questions += 1
        found = [rows.get(word.upper()) for word in line]
        if all(row is not None for row in found):
            asked.append([row for row in found if row is not None])
    if questions == 0:
        return {}
    scores = {"analogy_coverage": len(asked) / questions}
    if not asked:
        return scores
    unit = vectors[:top] / np.maximum(np.linalg.norm(vectors[:top], axis=1, keepdims=True), 1e-12)
    quads = np.asarray(asked, dtype=np.int64)
    correct = 0
    for start in range(0, len(quads), ANALOGY_BATCH):
        if should_stop():
            raise TrainingStopped("stopped during the analogy test")
        a, b, c, expected = quads[start : start + ANALOGY_BATCH].T
        similarity = (unit[b] - unit[a] + unit[c]) @ unit.T
        batch = np.arange(len(a))
        for excluded in (a, b, c):
            similarity[batch, excluded] = -np.inf
        correct += int((similarity.argmax(axis=1) == expected).sum())
    scores["analogy_accuracy"] = correct / len(asked)
    return scores


def _analogy_questions() -> Iterator[list[str]]:
    """The four words of every question in gensim's questions-words.txt."""
    reference = importlib.resources.files("gensim").joinpath(QUESTIONS_FILE)
    for line in reference.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 4 and not line.startswith(":"):
            yield fields


def word_coverage(
    vectors: KeyedVectors, examples: Sequence[Mapping[str, Any]], tokenizer: WordTokenizer
) -> dict[str, float]:
    """`test_word_coverage`: the share of the test split's words that have a vector."""
    words = [
        w for e in examples if isinstance(e.get("text"), str) for w in tokenizer.words(e["text"])
    ]
    if not words:
        return {}
    known = sum(1 for word in words if word in vectors.key_to_index)
    return {"test_word_coverage": known / len(words)}
