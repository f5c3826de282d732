"""Translation: `/v1/translate` and v2 (`TEXT_OUT`).

Example::

    params = Seq2SeqParams(source_language="en", target_language="es")
    served = await engine.infer(TRANSLATION, "apertium-en-es", ["hello"], params, caller=who)
    served.results  # -> ["hola"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast, runtime_checkable

from openmaas.tasks.names import Task
from openmaas.tasks.seq2seq import Seq2SeqParams, Seq2SeqTask
from openmaas.tasks.text_input import TokenCounter


@runtime_checkable
class Translator(TokenCounter, Protocol):
    def translate(self, texts: Sequence[str], params: Seq2SeqParams) -> list[str]: ...


class TranslationTask(Seq2SeqTask):
    name = Task.TRANSLATION.value
    protocol = Translator

    def method(self, model: object) -> Callable[[Sequence[str], Seq2SeqParams], list[str]]:
        return cast(Translator, model).translate


TRANSLATION = TranslationTask()
