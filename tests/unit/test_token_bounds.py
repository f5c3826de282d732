"""The token bounds reserved before a request runs: never below what real tokenizers count."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from openmaas.tasks.embedding import EMBEDDING
from openmaas.tasks.rerank import RERANK, RerankQuery
from openmaas.tasks.seq2seq import Seq2SeqParams
from openmaas.tasks.speech_recognition import SPEECH_RECOGNITION, TranscriptionParams
from openmaas.tasks.text_generation import (
    CHAT_MESSAGE_TOKENS,
    CHAT_TEMPLATE_TOKENS,
    GenerationParams,
    generation_token_bound,
)
from openmaas.tasks.text_input import ITEM_OVERHEAD_TOKENS, text_token_bound, token_bound
from openmaas.tasks.translation import TRANSLATION

SAMPLES = [
    "plain ASCII words",
    "héllo wörld, ça va?",
    "数据科学 与 机器学习",
    "emoji 🙂🙃 and more 🚀",
    "",
    "   many    spaces   ",
]


def test_the_bound_is_the_utf8_size_plus_the_special_tokens() -> None:
    assert text_token_bound("hello") == 5 + ITEM_OVERHEAD_TOKENS
    assert text_token_bound("é") == 2 + ITEM_OVERHEAD_TOKENS
    assert text_token_bound("🙂") == 4 + ITEM_OVERHEAD_TOKENS
    assert text_token_bound("\ud800") == 3 + ITEM_OVERHEAD_TOKENS  # a lone surrogate: no error


@pytest.mark.parametrize("text", SAMPLES)
def test_a_byte_level_tokenizer_never_counts_more_than_the_bound(text: str) -> None:
    """The worst case for the bound: a byte-level BPE without merges, one token a byte."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    count = len(tokenizer.encode(text).ids)
    assert count == len(text.encode()) + (1 if text and not text.startswith(" ") else 0)
    assert count <= text_token_bound(text)


def test_inputs_of_every_text_task_are_bounded() -> None:
    texts = ["one", "two words"]
    assert token_bound(texts) == 3 + 9 + 2 * ITEM_OVERHEAD_TOKENS
    assert token_bound("one") == 3 + ITEM_OVERHEAD_TOKENS
    # Token ids (embeddings) count as given.
    assert EMBEDDING.token_bound([[1, 2, 3], [4]], None) == 4 + 2 * ITEM_OVERHEAD_TOKENS
    assert TRANSLATION.token_bound(texts, Seq2SeqParams()) == token_bound(texts)
    # A cross-encoder counts the query with every document.
    query = RerankQuery("q?", ["doc one", "doc two"])
    assert RERANK.token_bound(query, None) == 2 * text_token_bound("q?") + token_bound(
        ["doc one", "doc two"]
    )
    # Audio is metered in seconds, not tokens.
    assert SPEECH_RECOGNITION.token_bound(b"RIFF....", TranscriptionParams()) == 0


def test_a_generation_holds_its_prompt_and_max_tokens() -> None:
    params = GenerationParams(max_tokens=100)
    assert generation_token_bound(params, prompt="Hi") == 2 + ITEM_OVERHEAD_TOKENS + 100
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert generation_token_bound(params, messages=chat) == (
        CHAT_TEMPLATE_TOKENS
        + text_token_bound("Be brief.")
        + text_token_bound("Hi")
        + 2 * CHAT_MESSAGE_TOKENS
        + 100
    )
