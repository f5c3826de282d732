"""Generation tasks of the transformers runtime: streaming causal language models, and
sequence-to-sequence translation and summarization.

Causal generation is a decoding loop of its own over the KV cache, so each token reaches the
caller as soon as it exists: greedy or temperature + nucleus sampling, stop sequences held
back until resolved, and text released only in whole characters.

Example::

    model = TransformersRuntime().load(source, LoadOptions())  # source.task == "text-generation"
    for delta in model.generate("Once upon a time", GenerationParams(max_tokens=32, stop=("\\n",))):
        print(delta.text, end="")
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, cast

import jinja2
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    PreTrainedTokenizerBase,
)

from openmaas.errors import InputTooLong, InvalidRequest, UnsupportedLanguage, UnsupportedSource
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.runtimes.chat_templates import ChatTemplate, RenderLimits, TemplateLimitExceeded
from openmaas.runtimes.transformers import Checkpoint, TransformersModel
from openmaas.tasks.names import Task
from openmaas.tasks.seq2seq import Seq2SeqParams
from openmaas.tasks.text_generation import GenerationDelta, GenerationParams

# -- decoding pieces --------------------------------------------------------------------------

# What torch.Generator.manual_seed takes: a signed or unsigned 64-bit integer.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


class TokenSampler:
    """Picks the next token: argmax at temperature 0, else a draw from the temperature-scaled
    distribution cut to its top-p nucleus. Seeded draws repeat exactly."""

    def __init__(self, params: GenerationParams, device: torch.device):
        if params.temperature < 0:
            raise InvalidRequest("temperature must be 0 or more", param="temperature")
        if not 0 < params.top_p <= 1:
            raise InvalidRequest("top_p must be in (0, 1]", param="top_p")
        if params.seed is not None and not SEED_MIN <= params.seed <= SEED_MAX:
            raise InvalidRequest(
                f"seed must be a whole number from {SEED_MIN} to {SEED_MAX}", param="seed"
            )
        self.temperature = params.temperature
        self.top_p = params.top_p
        self.generator = torch.Generator(device=device)
        if params.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(params.seed)

    def pick(self, logits: torch.Tensor) -> int:
        """`logits`: (vocabulary,) for the next position."""
        if self.temperature == 0:
            return int(torch.argmax(logits))
        # In float64 and from the largest logit: a tiny temperature or top_p rounded to 0 in
        # float32 (0/0 is NaN, and a cut at 0 kept no token), and multinomial raised a 500.
        scaled = (logits.double() - logits.max().double()) / self.temperature
        probabilities = torch.softmax(scaled, dim=-1)
        ordered, order = torch.sort(probabilities, descending=True)
        if self.top_p < 1:
            # Keep the most likely tokens up to and including the one that crosses top_p.
            outside = torch.cumsum(ordered, dim=-1) - ordered >= self.top_p
            outside[0] = False  # the most likely token always stays
            ordered = ordered.masked_fill(outside, 0.0)
        choice = torch.multinomial(ordered, 1, generator=self.generator)
        return int(order[choice])


class IncrementalDecoder:
    """The text of a growing token sequence, released in whole characters. A token that ends
    inside a multi-byte character decodes to a trailing U+FFFD, which is held until the token
    completing it arrives; `flush` releases what never completed.

    Each step decodes a short window, not everything so far (the method of TGI and vLLM): the
    window restarts after every step that ends on a character boundary. It starts on tokens
    already released, prompt tokens at first, because some tokenizers render a sequence's
    first token without its leading space."""

    CONTEXT_TOKENS = 5

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context: Sequence[int]):
        self.tokenizer = tokenizer
        self.ids = list(context[-self.CONTEXT_TOKENS :])
        self.prefix = 0  # window start
        self.read = len(self.ids)  # the window's tokens before this were released already
        self.extra = 0  # characters released from the tokens after `read`

    def push(self, token_id: int) -> str:
        """Add a token; returns the text it settles (often "", sometimes several chars)."""
        self.ids.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """What is still held: a character the generation ended inside of, as U+FFFD."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        pending = not final and after.endswith("\ufffd")
        settled = len(after) - 1 if pending else len(after)
        start = len(before) + self.extra
        piece = after[start:settled]
        if pending:
            self.extra += len(piece)
        elif len(after) > len(before):
            self.prefix, self.read, self.extra = self.read, len(self.ids), 0
        return piece

    def _decode(self, ids: list[int]) -> str:
        return str(
            self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )


@dataclass(frozen=True, slots=True)
class StopSequences:
    """Where generated text must end. Text that could still become a stop sequence is held
    back; the stop sequence itself is never released."""

    stops: tuple[str, ...]

    @classmethod
    def of(cls, stops: Sequence[str]) -> StopSequences:
        return cls(tuple(stop for stop in stops if stop))

    def find(self, text: str, start: int) -> int | None:
        """Where the earliest stop sequence begins at or after `start`, if any."""
        hits = [i for stop in self.stops if (i := text.find(stop, start)) >= 0]
        return min(hits) if hits else None

    def unsettled(self, text: str, start: int) -> int:
        """How many characters at the end of `text[start:]` could begin a stop sequence."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text) - start), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


# -- causal language models -------------------------------------------------------------------

# Placeholders for message contents while a chat template renders (private-use characters, so
# no template or tokenizer gives them meaning); content itself never enters the rendered shell.
CONTENT_MARK = ("\ue000", "\ue001")
CONTENT_MARKS = re.compile(f"{CONTENT_MARK[0]}(\\d+){CONTENT_MARK[1]}")


def _cache_field(network: torch.nn.Module) -> str:
    """The name of the key/value cache, as argument and output field: transformers 5 renamed
    `past_key_values` to `cache` (and warns on the old name); older releases know only that."""
    parameters = inspect.signature(network.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


class CausalLanguageModel(TransformersModel):
    """`AutoModelForCausalLM`, streamed token by token."""

    auto_class = AutoModelForCausalLM

    def __init__(self, source: ModelSource, tasks: frozenset[Task], checkpoint: Checkpoint):
        super().__init__(source, tasks, checkpoint)
        self.eos_ids = _eos_ids(self.network.generation_config.eos_token_id) | _eos_ids(
            self.network.config.eos_token_id
        )
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(int(self.tokenizer.eos_token_id))
        self.cache_field = _cache_field(self.network)
        self._compiled_template: ChatTemplate | None = None

    # Set from the server's settings by `load`; these defaults serve direct construction.
    render_limits = RenderLimits()

    @classmethod
    def load(cls, source: ModelSource, options: LoadOptions) -> Self:
        model = super().load(source, options)
        model.render_limits = RenderLimits(
            timeout_s=options.chat_template_timeout_s, max_chars=options.max_prompt_chars
        )
        return model

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        label = self.source.label
        if self.tokenizer.chat_template:
            try:
                rendered = self._chat_template().render(
                    messages, add_generation_prompt=True, **self.tokenizer.special_tokens_map
                )
            except TemplateLimitExceeded as exc:
                # The model's template, not the messages, is at fault; it is refused before
                # it holds the model's thread any longer.
                raise InvalidRequest(
                    f"the chat template of model '{label}' {exc} (limits: "
                    f"{self.render_limits.timeout_s} s, OPENMAAS_CHAT_TEMPLATE_TIMEOUT_S; "
                    f"{self.render_limits.max_chars} characters, OPENMAAS_MAX_PROMPT_CHARS)",
                    param="messages",
                ) from exc
            except jinja2.TemplateError as exc:
                # Templates refuse what their model was not trained on (a system message,
                # roles out of turn) with `raise_exception`: the caller's mistake.
                raise InvalidRequest(
                    f"model '{label}' cannot take these messages: {exc}", param="messages"
                ) from exc
        else:
            lines = [f"{message['role']}: {message['content']}" for message in messages]
            rendered = "\n".join([*lines, "assistant:"])
        if len(rendered) > self.render_limits.max_chars:
            raise InvalidRequest(
                f"the prompt has {len(rendered)} characters; at most "
                f"{self.render_limits.max_chars} (OPENMAAS_MAX_PROMPT_CHARS)",
                param="messages",
            )
        return rendered

    def _chat_template(self) -> ChatTemplate:
        """The tokenizer's template, compiled once (a template that fails to compile is
        refused on each request, as before)."""
        if self._compiled_template is None:
            try:
                source = self.tokenizer.get_chat_template()
            except ValueError as exc:  # several named templates and no default among them
                raise InvalidRequest(
                    f"model '{self.source.label}' has no default chat template: {exc}",
                    param="messages",
                ) from exc
            self._compiled_template = ChatTemplate(source, self.render_limits)
        return self._compiled_template

    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        rendered = self.chat_prompt(messages)
        if not any(control in m["content"] for m in messages for control in self._controls):
            return self._prompt_ids(rendered)  # the common case: tokenized as trained
        # A message writes a control token. The template is rendered around placeholders and
        # encoded piece by piece: its own text with control tokens parsed, each message's
        # content with them split into ordinary text.
        opening, closing = CONTENT_MARK
        shell = self.chat_prompt(
            [{**m, "content": f"{opening}{i}{closing}"} for i, m in enumerate(messages)]
        )
        pieces = CONTENT_MARKS.split(shell)
        ids = self._prompt_ids(pieces[0], allow_empty=True)
        for index, text in zip(pieces[1::2], pieces[2::2], strict=True):
            content = messages[int(index)]["content"]
            ids += self.tokenizer(content, add_special_tokens=False, split_special_tokens=True)[
                "input_ids"
            ]
            ids += self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids or self._prompt_ids("")

    def generate(
        self, prompt: str | Sequence[int], params: GenerationParams
    ) -> Iterator[GenerationDelta]:
        # Checks happen here, before the first `next()`: a generator function would defer
        # them to the first step, after the caller has started streaming a response.
        prompt_ids = self._prompt_ids(prompt) if isinstance(prompt, str) else list(prompt)
        if not prompt_ids:
            prompt_ids = self._prompt_ids("")
        context = self.max_input_tokens
        if context is not None and len(prompt_ids) >= context:
            raise InputTooLong(
                f"the prompt has {len(prompt_ids)} tokens; model '{self.source.label}' has a "
                f"context of {context} tokens, which must also hold the completion",
                param="prompt",
            )
        if params.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
        budget = params.max_tokens
        if context is not None:
            budget = min(budget, context - len(prompt_ids))
        sampler = TokenSampler(params, self.device)
        return self._stream(prompt_ids, budget, sampler, StopSequences.of(params.stop))

    @functools.cached_property
    def _controls(self) -> tuple[str, ...]:
        """The tokenizer's control tokens as text: special tokens, and added tokens marked
        special (ChatML's `<|im_start|>`)."""
        added = self.tokenizer.added_tokens_decoder.values()
        controls = {*self.tokenizer.all_special_tokens, *(t.content for t in added if t.special)}
        return tuple(sorted(c for c in controls if c))

    def _prompt_ids(self, prompt: str, *, allow_empty: bool = False) -> list[int]:
        bos = self.tokenizer.bos_token
        # A chat template renders the BOS token itself; a second one degrades the output.
        add_special_tokens = not (isinstance(bos, str) and bos and prompt.startswith(bos))
        ids = list(self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
        if ids or allow_empty:
            return ids
        if self.tokenizer.bos_token_id is None:
            raise InvalidRequest("the prompt is empty", param="prompt")
        return [int(self.tokenizer.bos_token_id)]

    def _stream(
        self, prompt_ids: list[int], budget: int, sampler: TokenSampler, stops: StopSequences
    ) -> Iterator[GenerationDelta]:
        decoder = IncrementalDecoder(self.tokenizer, prompt_ids)
        prompt_tokens = len(prompt_ids)
        text = ""
        released = 0
        generated = 0
        step_input = torch.tensor([prompt_ids], device=self.device)
        cache: Any = None
        while True:
            finish_reason: str | None = None
            if generated == budget:
                finish_reason = "length"
            else:
                # Per step, not around the loop: the mode is thread state, and this generator
                # is suspended between steps while its caller runs other code.
                with torch.inference_mode():
                    output = self.network(
                        input_ids=step_input, use_cache=True, **{self.cache_field: cache}
                    )
                    cache = getattr(output, self.cache_field)
                    token = sampler.pick(output.logits[0, -1])
                generated += 1  # an EOS counts: it was generated
                if token in self.eos_ids:
                    finish_reason = "stop"
            text += decoder.flush() if finish_reason else decoder.push(token)
            stop_at = stops.find(text, released)
            if stop_at is not None:
                text = text[:stop_at]
                finish_reason = "stop"
            if finish_reason is not None:
                yield GenerationDelta(text[released:], prompt_tokens, generated, finish_reason)
                return
            ready = len(text) - stops.unsettled(text, released)
            if ready > released:
                yield GenerationDelta(text[released:ready], prompt_tokens, generated)
                released = ready
            step_input = torch.tensor([[token]], device=self.device)


def _eos_ids(value: int | Sequence[int] | None) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


# -- sequence to sequence ---------------------------------------------------------------------

SEQ2SEQ_TEXTS_PER_PASS = 16  # beams multiply the batch; keep passes modest
# Language-code tokens of multilingual translators: NLLB (eng_Latn), mBART-50 (en_XX), and
# M2M100 (__en__, addressed as "en").
LANGUAGE_TOKEN = re.compile(r"[a-z]{2,3}_[A-Z][a-z]{3}|[a-z]{2}_[A-Z]{2}")
M2M_LANGUAGE_TOKEN = re.compile(r"__([a-z]{2,3})__")


@dataclass(frozen=True, slots=True)
class LanguageCodes:
    """The languages a multilingual translator addresses by token: code -> the token id that
    starts output in that language. Empty for single-pair models."""

    token_ids: Mapping[str, int]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> LanguageCodes:
        mapping = getattr(tokenizer, "lang_code_to_id", None)
        if isinstance(mapping, Mapping) and mapping:
            return cls({str(code): int(i) for code, i in mapping.items()})
        tokens: dict[str, str] = {}
        for token in tokenizer.all_special_tokens:
            if LANGUAGE_TOKEN.fullmatch(token):
                tokens[token] = token
            elif match := M2M_LANGUAGE_TOKEN.fullmatch(token):
                tokens[match.group(1)] = token
        ids = tokenizer.convert_tokens_to_ids(list(tokens.values()))
        ids = [ids] if isinstance(ids, int) else ids
        return cls(dict(zip(tokens, ids, strict=True)))

    def token_id(self, code: str, *, model: str, param: str) -> int:
        if code not in self.token_ids:
            known = ", ".join(sorted(self.token_ids))
            raise UnsupportedLanguage(
                f"model '{model}' does not know the language '{code}'; it knows: {known}",
                param=param,
            )
        return self.token_ids[code]


class _Seq2SeqModel(TransformersModel):
    """`AutoModelForSeq2SeqLM` over batches, with the checkpoint's own generation settings
    (greedy or beam search) and a cap on new tokens."""

    auto_class = AutoModelForSeq2SeqLM

    def __init__(self, source: ModelSource, tasks: frozenset[Task], checkpoint: Checkpoint):
        super().__init__(source, tasks, checkpoint)
        if not self.network.can_generate():
            raise UnsupportedSource(
                f"model '{source.label}' ({type(self.network).__name__}) cannot generate text",
                param="source",
            )
        # Typed by hand: transformers annotates `generate` against a private protocol.
        self.generate_ids = cast("Callable[..., torch.Tensor]", self.network.generate)

    def _run(
        self, texts: Sequence[str], params: Seq2SeqParams, options: Mapping[str, Any]
    ) -> list[str]:
        if params.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
        outputs = [""] * len(texts)
        if not texts:
            return outputs
        encoded = self.tokenize(texts)
        for batch in self.sub_batches(encoded, max_texts=SEQ2SEQ_TEXTS_PER_PASS):
            with torch.inference_mode():
                generated = self.generate_ids(
                    input_ids=batch.inputs["input_ids"],
                    attention_mask=batch.inputs["attention_mask"],
                    max_new_tokens=params.max_tokens,
                    **options,
                )
            decoded = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for index, text in zip(batch.indices, decoded, strict=True):
                outputs[index] = str(text).strip()
        return outputs


class Translator(_Seq2SeqModel):
    """Single-pair models ignore the languages asked for; multilingual ones (NLLB, M2M100,
    mBART-50) set the source language on the tokenizer and force the target's token first."""

    def __init__(self, source: ModelSource, tasks: frozenset[Task], checkpoint: Checkpoint):
        super().__init__(source, tasks, checkpoint)
        self.languages = LanguageCodes.of(self.tokenizer)
        # The tokenizer keeps the last source language set; requests without one get this.
        self.default_source_language: str | None = getattr(self.tokenizer, "src_lang", None)

    def translate(self, texts: Sequence[str], params: Seq2SeqParams) -> list[str]:
        options: dict[str, Any] = {}
        if self.languages.token_ids:
            label = self.source.label
            source_language = params.source_language or self.default_source_language
            if source_language is not None:
                self.languages.token_id(source_language, model=label, param="source_language")
                self.tokenizer.src_lang = source_language
            if params.target_language is not None:
                options["forced_bos_token_id"] = self.languages.token_id(
                    params.target_language, model=label, param="target_language"
                )
        return self._run(texts, params, options)


class Summarizer(_Seq2SeqModel):
    def summarize(self, texts: Sequence[str], params: Seq2SeqParams) -> list[str]:
        return self._run(texts, params, {})
