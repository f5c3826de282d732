"""The names of the tasks this server ships with.

The set of servable tasks is open (`tasks.catalogue.register_task`); this enum names the
built-in ones, for the registry's detection, datasets and recipes, which know them by name.
"""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    EMBEDDING = "embedding"
    TEXT_CLASSIFICATION = "text-classification"
    TOKEN_CLASSIFICATION = "token-classification"  # noqa: S105 - a task name, not a secret
    RERANK = "rerank"
    TEXT_GENERATION = "text-generation"
    TRANSLATION = "translation"
    SUMMARIZATION = "summarization"
    SPEECH_RECOGNITION = "speech-recognition"
    IMAGE_CLASSIFICATION = "image-classification"
    SPEECH_SYNTHESIS = "speech-synthesis"
