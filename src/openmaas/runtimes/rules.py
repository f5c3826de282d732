"""Rule and lexicon engines that ship as code, not weights: VADER sentiment, langid.py
language identification, TextRank summarization, Apertium translation.

A version's `openmaas.json` names the engine; data files the catalog copied (VADER's
lexicons) sit next to it. Apertium is a system program: `apertium <pair>` runs per batch, with
the pairs installed on the server (`apertium -l`).

Example::

    model = RulesRuntime().load(registry_source("vader"), LoadOptions())
    model.classify(["I love this!"])[0][0]  # -> LabelScore(label="positive", score=0.692)
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from openmaas.errors import InvalidRequest, ModelLoadFailed, OpenMaaSError, UnsupportedLanguage
from openmaas.runtimes.base import NATIVE_SPEC, LoadedModel, LoadOptions, ModelSource, Runtime
from openmaas.tasks.names import Task
from openmaas.tasks.seq2seq import Seq2SeqParams
from openmaas.tasks.text_classification import LabelScore, ranked

MIB = 1024 * 1024
# Resident memory once loaded, measured with tracemalloc (langid.py 1.1.6, vaderSentiment
# 3.3.2); summa holds nothing between calls. Apertium's is the size of its pairs' data.
ENGINE_MEMORY_BYTES = {"langid": 24 * MIB, "vader": 3 * MIB, "textrank": 1 * MIB}
APERTIUM_MODES = Path("/usr/share/apertium/modes")  # where Debian installs the pairs
APERTIUM_TIMEOUT_S = 30.0  # per batch, plus one second per 5,000 characters
# A block-level tag between texts: Apertium's HTML deformatter passes it through untouched
# and ends a sentence there, so one process translates a whole batch without texts running
# into each other.
APERTIUM_SEPARATOR = '<hr class="openmaas-separator"/>'
# ISO 639-1 -> the ISO 639-3 codes Apertium names its pairs with.
ISO_639_3 = {
    **{"en": "eng", "es": "spa", "ca": "cat", "fr": "fra", "pt": "por", "it": "ita"},
    **{"de": "deu", "nl": "nld", "oc": "oci", "gl": "glg", "eu": "eus", "ro": "ron"},
    **{"sv": "swe", "da": "dan", "nb": "nob", "nn": "nno", "is": "isl", "eo": "epo"},
    **{"an": "arg", "ru": "rus", "uk": "ukr", "pl": "pol", "sl": "slv", "mk": "mkd"},
    **{"bg": "bul", "cs": "ces", "sk": "slk", "br": "bre", "cy": "cym", "ga": "gle"},
}
VADER_LABELS = ("negative", "neutral", "positive")
# Longest texts, in characters, each engine takes (measured on a shared 2-core machine):
# VADER's "but" rule is quadratic (200,000 characters: 9 s); TextRank compares every pair of
# sentences, so its work is sentences times words (400 sentences in 100,000 characters: 3.5 s);
# Apertium translates about 30,000 characters a second.
VADER_MAX_CHARS = 25_000
TEXTRANK_MAX_CHARS = 100_000
APERTIUM_MAX_CHARS = 100_000


class RulesRuntime(Runtime):
    """Engines selected by `openmaas.json`'s `engine`: vader, langid, textrank, apertium."""

    name = "rules"
    tasks = frozenset({Task.TEXT_CLASSIFICATION, Task.SUMMARIZATION, Task.TRANSLATION})

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        engine = str(_read_spec(source).get("engine"))
        if engine == "apertium":
            declared = {str(p) for p in source.params.get("pairs") or []}
            modes = (m.stem for m in APERTIUM_MODES.glob("*.mode"))
            return _pairs_data_bytes([m for m in modes if m.partition("_")[0] in declared])
        return ENGINE_MEMORY_BYTES.get(engine, MIB)

    def load(self, source: ModelSource, options: LoadOptions) -> LoadedModel:
        spec = _read_spec(source)
        engine = spec.get("engine")
        factory = ENGINES.get(str(engine))
        if factory is None:
            raise ModelLoadFailed(
                f"{source.label}: unknown rules engine {engine!r} (known: {', '.join(ENGINES)})"
            )
        model = factory(source, options)
        if Task(source.task) not in model.tasks:
            served = ", ".join(sorted(model.tasks))
            raise ModelLoadFailed(f"{source.label}: engine {engine} serves {served} only")
        return model


def _read_spec(source: ModelSource) -> dict[str, Any]:
    path = source.directory / NATIVE_SPEC
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadFailed(f"{source.label}: cannot read {NATIVE_SPEC}: {exc}") from exc
    if not isinstance(spec, dict):
        raise ModelLoadFailed(f"{source.label}: {NATIVE_SPEC} is not an object")
    return spec


class VaderModel(LoadedModel):
    """VADER sentiment: the shares of negative, neutral and positive wording, ranked."""

    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.source = source
        self.tasks = frozenset({Task.TEXT_CLASSIFICATION})
        self.labels = VADER_LABELS
        self.memory_bytes = ENGINE_MEMORY_BYTES["vader"]
        self.max_input_chars = VADER_MAX_CHARS
        # Absolute paths: VADER joins them onto its own package directory, which keeps an
        # absolute path as given and puts a relative one inside the package.
        lexicon = (source.directory / "vader_lexicon.txt").absolute()
        emoji = (source.directory / "emoji_utf8_lexicon.txt").absolute()
        if not (lexicon.is_file() and emoji.is_file()):
            raise ModelLoadFailed(f"{source.label}: the VADER lexicon files are missing")
        self._analyzer = SentimentIntensityAnalyzer(
            lexicon_file=str(lexicon), emoji_lexicon=str(emoji)
        )

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        results = []
        for text in texts:
            scores = self._analyzer.polarity_scores(text)
            shares = [float(scores["neg"]), float(scores["neu"]), float(scores["pos"])]
            if sum(shares) == 0:  # no words at all: nothing negative or positive in it
                shares = [0.0, 1.0, 0.0]
            results.append(ranked(self.labels, shares))
        return results


class LangidModel(LoadedModel):
    """langid.py: 97 languages by ISO 639-1 code, probabilities normalized over all of them."""

    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        from langid.langid import LanguageIdentifier, model

        self.source = source
        self.tasks = frozenset({Task.TEXT_CLASSIFICATION})
        self.memory_bytes = ENGINE_MEMORY_BYTES["langid"]
        self._identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        self.labels = tuple(str(code) for code in self._identifier.nb_classes)

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        results = []
        for text in texts:
            ranking = self._identifier.rank(text)
            results.append(ranked([code for code, _ in ranking], [p for _, p in ranking]))
        return results


class TextRankModel(LoadedModel):
    """Extractive summaries: the best-connected share (`ratio`) of the text's sentences."""

    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        self.source = source
        self.tasks = frozenset({Task.SUMMARIZATION})
        self.memory_bytes = ENGINE_MEMORY_BYTES["textrank"]
        self.max_input_chars = TEXTRANK_MAX_CHARS
        self.max_input_sentences = options.max_input_sentences
        self._language = str(source.params.get("language") or "english")
        self._ratio = float(source.params.get("ratio") or 0.2)

    def count_sentences(self, texts: Sequence[str]) -> list[int]:
        # summa's own sentence pattern, without its abbreviation merging (which only joins
        # sentences): at least as many as it will rank.
        from summa.preprocessing.textcleaner import RE_SENTENCE

        return [sum(1 for _ in RE_SENTENCE.finditer(text)) for text in texts]

    def summarize(self, texts: Sequence[str], params: Seq2SeqParams) -> list[str]:
        from summa import summarizer
        from summa.preprocessing.textcleaner import split_sentences

        ratio = self._ratio if params.ratio is None else params.ratio
        if not 0 < ratio <= 1:
            raise InvalidRequest(f"ratio must be in (0, 1], got {ratio}", param="ratio")
        summaries = []
        for text in texts:
            summary = summarizer.summarize(text, ratio=ratio, language=self._language)
            if not summary.strip():
                # TextRank keeps nothing from texts of a few sentences: the first one stands in.
                sentences = split_sentences(text)
                summary = sentences[0] if sentences else text.strip()
            summaries.append(summary)
        return summaries


class ApertiumModel(LoadedModel):
    """Rule-based translation with the `apertium` command and its installed pairs.

    The version's `pairs` param (e.g. ["eng-spa", "spa-eng"]) limits the model to its own
    pairs and regional variants of them; the first is used when a request names no language.
    """

    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        self.source = source
        self.tasks = frozenset({Task.TRANSLATION})
        self.max_input_chars = APERTIUM_MAX_CHARS
        command = shutil.which("apertium")
        if command is None:
            raise ModelLoadFailed(
                f"{source.label}: the apertium command is not installed on the server "
                "(apt-get install apertium and the pair's package, e.g. apertium-eng-spa)"
            )
        self._command = command
        declared = [str(p) for p in source.params.get("pairs") or []]
        installed = installed_apertium_pairs(command)
        self.pairs = tuple(p for p in installed if not declared or p.partition("_")[0] in declared)
        if not self.pairs:
            raise ModelLoadFailed(
                f"{source.label}: none of its Apertium pairs ({', '.join(declared)}) is "
                f"installed (installed: {', '.join(installed) or 'none'})"
            )
        self._default = declared[0] if declared and declared[0] in self.pairs else self.pairs[0]
        self.memory_bytes = _pairs_data_bytes(self.pairs)

    def translate(self, texts: Sequence[str], params: Seq2SeqParams) -> list[str]:
        pair = self._pair(params.source_language, params.target_language)
        results = [""] * len(texts)
        filled = [i for i, text in enumerate(texts) if text.strip()]
        if filled:
            outputs = self._run(pair, [texts[i] for i in filled])
            for i, output in zip(filled, outputs, strict=True):
                results[i] = output
        return results

    def _pair(self, source_language: str | None, target_language: str | None) -> str:
        if source_language is None and target_language is None:
            return self._default
        src, tgt = _apertium_code(source_language), _apertium_code(target_language)

        def matches(pair: str, *, variants: bool) -> bool:
            s, _, t = pair.partition("-")
            if tgt is None:  # any target; regional variants (eng_US) only when asked for
                target_ok = variants or "_" not in t
            else:
                target_ok = t == tgt or (variants and t.partition("_")[0] == tgt)
            return (src is None or s == src) and target_ok

        for variants in (False, True):
            candidates = [p for p in self.pairs if matches(p, variants=variants)]
            if len(candidates) == 1:
                return candidates[0]
            if candidates:
                raise UnsupportedLanguage(
                    f"model '{self.source.label}' has several pairs for that: "
                    f"{', '.join(candidates)}; name both languages",
                    param="source_language" if src is None else "target_language",
                )
        raise UnsupportedLanguage(
            f"model '{self.source.label}' has no Apertium pair {src or '?'}-{tgt or '?'}; "
            f"installed pairs: {', '.join(self.pairs)}",
            param="target_language",
        )

    def _run(self, pair: str, texts: Sequence[str]) -> list[str]:
        """One apertium process for the whole batch: starting its pipeline costs ~0.3 s."""
        batch = APERTIUM_SEPARATOR.join(html.escape(t, quote=False) for t in texts)
        timeout = APERTIUM_TIMEOUT_S + len(batch) / 5_000
        try:
            done = subprocess.run(
                [self._command, "-u", "-f", "html", pair],
                input=batch,
                capture_output=True,
                text=True,
                encoding="utf-8",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise OpenMaaSError(f"apertium {pair} did not finish within {timeout:.0f} s") from exc
        if done.returncode != 0:
            raise OpenMaaSError(f"apertium {pair} failed: {done.stderr.strip()[:300]}")
        parts = done.stdout.split(APERTIUM_SEPARATOR)
        if len(parts) != len(texts):
            if len(texts) == 1:
                raise OpenMaaSError(f"apertium {pair} returned no translation")
            # The separators did not survive (never seen): fall back to one process per text.
            return [self._run(pair, [t])[0] for t in texts]
        return [html.unescape(part).strip() for part in parts]


def installed_apertium_pairs(command: str) -> tuple[str, ...]:
    """The translation directions `apertium -l` lists (e.g. eng-spa, spa-eng_US)."""
    try:
        listed = subprocess.run(
            [command, "-l"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(sorted({line.strip() for line in listed.splitlines() if "-" in line}))


def _apertium_code(language: str | None) -> str | None:
    """en, eng, en-US, eng_US -> eng, eng, eng_US, eng_US."""
    if language is None:
        return None
    base, _, region = language.strip().replace("-", "_").partition("_")
    code = ISO_639_3.get(base.lower(), base.lower())
    return f"{code}_{region.upper()}" if region else code


def _pairs_data_bytes(pairs: Sequence[str]) -> int:
    """The size of the data files the pairs' pipelines map, read from their Debian mode
    files (1 MiB when there are none to read)."""
    files: set[Path] = set()
    for pair in pairs:
        try:
            mode = (APERTIUM_MODES / f"{pair}.mode").read_text(encoding="utf-8")
        except OSError:
            continue
        files.update(Path(p) for p in re.findall(r"'(/[^']+)'", mode))
    return sum(f.stat().st_size for f in files if f.is_file()) or MIB


ENGINES: Mapping[str, Callable[[ModelSource, LoadOptions], LoadedModel]] = {
    "vader": VaderModel,
    "langid": LangidModel,
    "textrank": TextRankModel,
    "apertium": ApertiumModel,
}
