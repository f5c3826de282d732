"""Summarization: `/v1/summarize` and v2 (`TEXT_OUT`).

Example::

    served = await engine.infer(SUMMARIZATION, "textrank", [article], Seq2SeqParams(ratio=0.2),
                                caller=who)
    served.results[0]  # -> the article's key sentences
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast, runtime_checkable

from openmaas.tasks.names import Task
from openmaas.tasks.seq2seq import Seq2SeqParams, Seq2SeqTask
from openmaas.tasks.text_input import TokenCounter


@runtime_checkable
class Summarizer(TokenCounter, Protocol):
    def summarize(self, texts: Sequence[str], params: Seq2SeqParams) -> list[str]: ...


class SummarizationTask(Seq2SeqTask):
    name = Task.SUMMARIZATION.value
    protocol = Summarizer

    def method(self, model: object) -> Callable[[Sequence[str], Seq2SeqParams], list[str]]:
        return cast(Summarizer, model).summarize


SUMMARIZATION = SummarizationTask()
