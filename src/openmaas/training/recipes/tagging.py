"""What every token-classification (NER) recipe shares: hyperparameter validation at
`resolve`, the tag set and tag indices of the splits, and the `TrainingResult` built from the
test split's entity metrics.

Examples are `{"tokens": [...], "tags": [...]}` with BIO tags (the dataset service converts
IOB1 files, CoNLL-2003's own, to BIO). Torch-free, like `classification`: the job system
imports the recipes to validate a job's hyperparameters.

Example::

    class MyTagger(TaggingRecipe):
        name = "mine"

        def defaults(self) -> dict[str, Any]:
            return {**TAGGING_DEFAULTS, "n_epochs": 3}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from openmaas.datasets.formats import BIO_TAG
from openmaas.training.hyperparameters import (
    COMMON_DEFAULTS,
    LoopSettings,
    fraction,
    positive_int,
)
from openmaas.training.recipe import Example, Recipe, TrainingContext, TrainingResult
from openmaas.training.recipes.classification import evaluated_result

if TYPE_CHECKING:
    from openmaas.training.loop import LoopOutcome
    from openmaas.training.token_loop import TaggerEvaluation

TASK = "token-classification"
OUTSIDE = "O"
# What a tagger's validation pass reports (entity precision, recall and F1, token accuracy).
STOPPING_METRICS = ("f1", "precision", "recall", "accuracy", "loss")
TAGGING_DEFAULTS: dict[str, Any] = {**COMMON_DEFAULTS, "early_stopping_metric": "f1"}


class TaggingRecipe(Recipe):
    """A token-classification recipe whose shared hyperparameters are checked at `resolve`."""

    tasks = (TASK,)

    def resolve(self, given: Mapping[str, Any], n_examples: int) -> dict[str, Any]:
        hp = super().resolve(given, n_examples)
        self.loop_settings(hp)
        fraction(hp, "dropout")
        positive_int(hp, "max_length")
        if hp["class_weighting"] == "oversample":
            raise ValueError(
                "hyperparameter 'class_weighting' cannot be 'oversample' for a tagger (a "
                "sentence holds many tags); use 'weighted' (balanced loss weights per tag)"
            )
        self.check(hp)
        return hp

    def loop_settings(self, hp: Mapping[str, Any]) -> LoopSettings:
        return LoopSettings.from_hyperparameters(hp, STOPPING_METRICS)

    def check(self, hp: Mapping[str, Any]) -> None:
        """Raise ValueError for a bad recipe-specific value (architecture sizes)."""


def tag_set(tags: Sequence[str]) -> tuple[str, ...]:
    """O, then B- and I- of every entity type in the data, both of each even when the data
    has only one (a tagger continues a B-X word with I-X)."""
    types = sorted({tag[2:] for tag in tags if tag != OUTSIDE})
    return (OUTSIDE, *(f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")))


@dataclass(frozen=True, slots=True)
class TaggedSentences:
    words: list[tuple[str, ...]]
    tags: list[tuple[int, ...]]  # indices into TaggedSplits.tags

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True, slots=True)
class TaggedSplits:
    """The context's splits with tags as indices into `tags` (the tag set of every split)."""

    tags: tuple[str, ...]
    train: TaggedSentences
    validation: TaggedSentences
    test: TaggedSentences

    @classmethod
    def from_context(cls, ctx: TrainingContext) -> TaggedSplits:
        splits = {"train": ctx.train, "validation": ctx.validation, "test": ctx.test}
        for name, examples in splits.items():
            for i, example in enumerate(examples):
                _check_example(name, i, example)
        if not ctx.train:
            raise ValueError("the training split is empty")
        every = {str(t) for examples in splits.values() for e in examples for t in e["tags"]}
        tags = tag_set(sorted(every))
        if len(tags) < 2:
            raise ValueError("the data tags no entity: every tag is O")
        index = {tag: i for i, tag in enumerate(tags)}

        def indexed(examples: Sequence[Example]) -> TaggedSentences:
            return TaggedSentences(
                words=[tuple(str(w) for w in e["tokens"]) for e in examples],
                tags=[tuple(index[str(t)] for t in e["tags"]) for e in examples],
            )

        return cls(tags, indexed(ctx.train), indexed(ctx.validation), indexed(ctx.test))

    def continuation(self) -> tuple[int, ...]:
        """Per tag, the tag of a word's later pieces: I-X for B-X and I-X, O for O."""
        index = {tag: i for i, tag in enumerate(self.tags)}
        return tuple(index[OUTSIDE if t == OUTSIDE else f"I-{t[2:]}"] for t in self.tags)

    def evaluation_split(self) -> tuple[str, TaggedSentences] | None:
        """The split the registered metrics come from: test, else validation."""
        if len(self.test):
            return "test", self.test
        if len(self.validation):
            return "validation", self.validation
        return None


def _check_example(split: str, index: int, example: Example) -> None:
    tokens, tags = example.get("tokens"), example.get("tags")
    where = f"{split} example {index}"
    if not isinstance(tokens, list | tuple) or not isinstance(tags, list | tuple) or not tokens:
        raise ValueError(
            f"{where} needs non-empty 'tokens' and 'tags' lists (token-classification "
            "examples are {'tokens': [...], 'tags': [...]})"
        )
    if len(tokens) != len(tags):
        raise ValueError(f"{where} has {len(tokens)} tokens but {len(tags)} tags")
    bad = next((t for t in tags if not isinstance(t, str) or not BIO_TAG.fullmatch(t)), None)
    if bad is not None:
        raise ValueError(f"{where}: tag {bad!r} is not O, B-TYPE or I-TYPE")


def tagging_result(
    ctx: TrainingContext,
    *,
    recipe: str,
    runtime: str,
    hyperparameters: Mapping[str, Any],
    tags: Sequence[str],
    outcome: LoopOutcome,
    evaluation: TaggerEvaluation | None,
    evaluated_on: str | None,
    params: Mapping[str, Any] | None = None,
) -> TrainingResult:
    return evaluated_result(
        ctx,
        task=TASK,
        recipe=recipe,
        runtime=runtime,
        hyperparameters=hyperparameters,
        labels=tags,
        outcome=outcome,
        evaluation=evaluation,
        evaluated_on=evaluated_on,
        params=params,
    )
