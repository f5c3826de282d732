"""Text generation: a streamed continuation of a prompt or a chat. `/v1/completions` and
`/v1/chat/completions`; the engine's streaming path (`InferenceEngine.generate`).

Example::

    stream = await engine.generate("qwen", GenerationParams(max_tokens=8), prompt="Hi",
                                   caller=who)
    text = "".join([d.text async for d in stream.deltas])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from openmaas.errors import InputTooLong, InvalidRequest
from openmaas.tasks.contract import Plan, TaskContract
from openmaas.tasks.names import Task
from openmaas.tasks.text_input import TokenCounter, text_token_bound


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationDelta:
    """One step of a generation stream: new text, and on the last step why it ended."""

    text: str
    prompt_tokens: int
    completion_tokens: int  # so far, cumulative
    finish_reason: str | None = None  # "stop" | "length" on the last delta


@runtime_checkable
class Generator(TokenCounter, Protocol):
    def generate(
        self, prompt: str | Sequence[int], params: GenerationParams
    ) -> Iterator[GenerationDelta]:
        """Stream a continuation of `prompt` (text, or token ids from `encode_chat`); the
        last delta carries `finish_reason`."""
        ...

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt for a chat: the tokenizer's chat template when it has one."""
        ...

    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """`chat_prompt` as token ids, in which message contents are only ever text: a
        control token written in a message (`<|im_end|>`) cannot end its turn or open one."""
        ...


# What a chat template adds besides the messages' text: a default system prompt, the turn
# that opens the answer (Qwen's default system prompt is about 20 tokens), and per message
# its role and turn markers. Not a bound for every template; settling charges any excess.
CHAT_TEMPLATE_TOKENS = 64
CHAT_MESSAGE_TOKENS = 8


def generation_token_bound(
    params: GenerationParams,
    *,
    prompt: str | None = None,
    messages: Sequence[Mapping[str, str]] | None = None,
) -> int:
    """At most how many tokens a generation charges, before anything runs: its prompt's
    (from the text's size) plus `max_tokens`."""
    if messages is not None:
        chat = sum(text_token_bound(m.get("content", "")) + CHAT_MESSAGE_TOKENS for m in messages)
        return CHAT_TEMPLATE_TOKENS + chat + params.max_tokens
    return text_token_bound(prompt or "") + params.max_tokens


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a generation starts from: a prompt text or chat token ids, and their tokens."""

    text: str | list[int]
    tokens: int


class TextGenerationTask(TaskContract[str, GenerationParams, GenerationDelta]):
    """Served by streaming (`prompt` then the model's `generate`), not by batches."""

    name = Task.TEXT_GENERATION.value
    protocol = Generator

    def default_params(self) -> GenerationParams:
        return GenerationParams()

    def plan(
        self, model: Generator, inputs: str, params: GenerationParams, *, label: str, truncate: bool
    ) -> Plan:
        raise InvalidRequest(
            "text generation streams: use /v1/completions or /v1/chat/completions",
            param="model",
        )

    def prompt(
        self,
        model: Generator,
        label: str,
        *,
        prompt: str | None,
        messages: Sequence[Mapping[str, str]] | None,
    ) -> Prompt:
        """The prompt as the model takes it, within its context (or InputTooLong)."""
        text: str | list[int]
        if messages is not None:
            text = model.encode_chat(messages)
            tokens = len(text)
        else:
            text = prompt or ""
            tokens = model.count_tokens([text])[0]
        limit = model.max_input_tokens
        if limit is not None and tokens >= limit:
            name = label.rsplit(":", 1)[0]
            raise InputTooLong(
                f"the prompt has {tokens} tokens; model '{name}' has a "
                f"context of {limit} tokens; shorten the prompt",
                param="messages" if messages is not None else "prompt",
            )
        return Prompt(text, tokens)


TEXT_GENERATION = TextGenerationTask()
