"""spaCy pipelines for named entities.

The pipeline directory is loaded with `spacy.load`; components the entity recognizer does not
use (tagger, parser, lemmatizer, ...) are not loaded at all when that is safe, which more than
halves the time per text for the small English pipeline.

Example::

    source = ModelSource.for_directory(path, task="token-classification", runtime="spacy")
    model = SpacyRuntime().load(source, LoadOptions())
    model.extract_entities(["Barack Obama visited Paris"])
    # -> [[Entity(text="Barack Obama", label="PERSON", start=0, end=12), Entity(... "GPE" ...)]]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from openmaas.errors import ModelLoadFailed
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime
from openmaas.tasks.names import Task
from openmaas.tasks.token_classification import Entity

log = logging.getLogger(__name__)

ENTITY_FACTORIES = frozenset({"ner", "beam_ner"})
ENTITY_SOURCES = ENTITY_FACTORIES | {"entity_ruler", "future_entity_ruler"}
EMBEDDING_FACTORIES = frozenset({"tok2vec", "transformer", "curated_transformer"})
# Components whose output no entity recognizer reads. Anything not listed here (an entity
# ruler whose patterns may match on lemmas or tags, custom components) keeps the whole
# pipeline. Measured on CoNLL-2003 dev with en_core_web_sm: 1,498 of 1,500 sentences get
# identical entities; the other two differ where the parser's sentence boundaries fall.
UNUSED_BY_NER = frozenset(
    {
        *("tagger", "morphologizer", "parser", "beam_parser", "senter", "sentencizer"),
        *("attribute_ruler", "lemmatizer", "trainable_lemmatizer", "textcat"),
        *("textcat_multilabel", "spancat", "spancat_singlelabel"),
    }
)
BATCH_SIZE = 256  # texts per nlp.pipe batch


class SpacyRuntime(Runtime):
    """spaCy pipeline directories (`spacy.load`), on CPU: the small pipelines this serves
    gain nothing from a GPU, and spaCy's GPU switch is process-wide."""

    name = "spacy"
    tasks = frozenset({Task.TOKEN_CLASSIFICATION})

    def load(self, source: ModelSource, options: LoadOptions) -> SpacyModel:
        return SpacyModel(source, memory_bytes=self.estimate_memory_bytes(source))


class SpacyModel(LoadedModel):
    def __init__(self, source: ModelSource, *, memory_bytes: int) -> None:
        import spacy

        self.source = source
        self.memory_bytes = memory_bytes
        self.tasks = frozenset({Task.TOKEN_CLASSIFICATION})
        if Task(source.task) is not Task.TOKEN_CLASSIFICATION:
            raise ModelLoadFailed(
                f"{source.label}: the spacy runtime serves token-classification, not {source.task}"
            )
        config_file = source.directory / "config.cfg"
        if not config_file.is_file():
            raise ModelLoadFailed(f"{source.label}: not a spaCy pipeline (no config.cfg)")
        exclude = _unused_components(spacy.util.load_config(config_file, interpolate=False))
        try:
            self._nlp: Any = spacy.load(source.directory, exclude=exclude)
        except (OSError, ValueError) as exc:  # missing files, incompatible spaCy version
            raise ModelLoadFailed(f"{source.label}: spaCy cannot load it: {exc}") from exc
        pipes: list[tuple[str, Any]] = self._nlp.pipeline
        taggers = [p for n, p in pipes if _factory(self._nlp, n) in ENTITY_SOURCES]
        if not taggers:
            raise ModelLoadFailed(f"{source.label}: the pipeline has no entity recognizer")
        self.labels = tuple(sorted({label for pipe in taggers for label in pipe.labels}))
        # Past it spaCy raises inside the batch (E088); the engine refuses such a text first.
        self.max_input_chars = int(self._nlp.max_length)
        log.debug("spacy: %s runs %s (excluded %s)", source.label, self._nlp.pipe_names, exclude)

    @property
    def components(self) -> tuple[str, ...]:
        """The pipeline components that run (the others were left out at load)."""
        return tuple(self._nlp.pipe_names)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(doc)) for doc in self._nlp.tokenizer.pipe(texts)]

    def extract_entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        return [
            [
                Entity(text=ent.text, label=ent.label_, start=ent.start_char, end=ent.end_char)
                for ent in doc.ents
            ]
            for doc in self._nlp.pipe(texts, batch_size=BATCH_SIZE)
        ]

    def unload(self) -> None:
        self._nlp = None


def _factory(nlp: Any, name: str) -> str:
    return str(nlp.get_pipe_meta(name).factory)


def _unused_components(config: Mapping[str, Any]) -> list[str]:
    """Components safe to leave out for entities; none when the pipeline is not understood."""
    components: Mapping[str, Any] = config.get("components", {})
    pipeline = list(config.get("nlp", {}).get("pipeline", []))
    factories = {name: str(components.get(name, {}).get("factory", "")) for name in pipeline}
    recognizers = [n for n, f in factories.items() if f in ENTITY_FACTORIES]
    understood = ENTITY_FACTORIES | EMBEDDING_FACTORIES | UNUSED_BY_NER
    if not recognizers or not set(factories.values()) <= understood:
        return []
    unused = [n for n, f in factories.items() if f in UNUSED_BY_NER]
    # A shared tok2vec/transformer stays when a recognizer listens to it.
    listened = [_listens_to(components[n].get("model", {})) for n in recognizers]
    if not any(listened):
        unused += [n for n, f in factories.items() if f in EMBEDDING_FACTORIES]
    return unused


def _listens_to(model: Mapping[str, Any]) -> bool:
    """True when a component's model (or a layer in it) is a listener to a shared embedding."""
    for key, value in model.items():
        if key == "@architectures" and "Listener" in str(value):
            return True
        if isinstance(value, Mapping) and _listens_to(value):
            return True
    return False
