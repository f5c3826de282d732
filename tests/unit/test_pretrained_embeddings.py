"""Word vectors in text format, the embedding matrix they give a vocabulary, and TextCNN's
training as Kim (2014) ran it (Adadelta, max-norm on the output layer)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from openmaas.errors import InvalidRequest, PayloadTooLarge
from openmaas.nn.textcnn import TextCNN, TextCNNConfig
from openmaas.nn.vocab import PAD_ID, UNKNOWN_ID, build_vocabulary
from openmaas.training.hyperparameters import COMMON_DEFAULTS, LoopSettings
from openmaas.training.optimizers import build_optimizer
from openmaas.training.pretrained_embeddings import (
    RANDOM_VECTOR_RANGE,
    PretrainedEmbeddings,
    embedding_matrix,
    install,
    random_vectors,
)
from openmaas.training.recipes import RECIPES
from openmaas.word_vectors.saved import WordVectors
from openmaas.word_vectors.text_format import read_text_vectors
from openmaas.word_vectors.tokenizer import WordTokenizer


def read(text: str, max_bytes: int = 1 << 20) -> WordVectors:
    return read_text_vectors(io.BytesIO(text.encode()), max_bytes=max_bytes).vectors


def test_the_word2vec_header_and_glove_files_read_alike() -> None:
    glove = read("the 0.5 -1\nfilm 2 3e-1\n")
    word2vec = read("2 2\nthe 0.5 -1\nfilm 2 3e-1\n")
    for vectors in (glove, word2vec):
        assert list(vectors.words) == ["the", "film"]
        expected = np.asarray([[0.5, -1.0], [2.0, 0.3]], dtype=np.float32)
        np.testing.assert_array_equal(vectors.vectors, expected)
        assert vectors.vectors.dtype == np.float32
        assert vectors.tokenizer == WordTokenizer(lowercase=True)


def test_a_repeated_word_keeps_its_first_vector_and_cased_files_keep_case() -> None:
    imported = read_text_vectors(io.BytesIO(b"Paris 1 1\nparis 2 2\nParis 3 3\n"), max_bytes=99)
    assert list(imported.vectors.words) == ["Paris", "paris"]
    assert imported.skipped_repeats == 1
    assert imported.vectors.tokenizer.lowercase is False


def test_a_file_past_its_byte_limit_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        read("the 1 2\nfilm 3 4\n", max_bytes=10)


def test_a_bad_line_is_named() -> None:
    with pytest.raises(InvalidRequest, match="line 3: 'c' has 1 numbers; every word needs 2"):
        read("a 1 2\nb 3 4\nc 5\n")
    with pytest.raises(InvalidRequest, match="line 1: 'x' is not a number"):
        read("a 1 x\n")
    with pytest.raises(InvalidRequest, match="line 2: a value beyond float32"):
        read("a 1 2\nb 1e39 1\n")


def vectors_of(words: dict[str, list[float]]) -> WordVectors:
    return WordVectors(
        words=list(words),
        counts=[0] * len(words),
        vectors=np.asarray(list(words.values()), dtype=np.float32),
        tokenizer=WordTokenizer(lowercase=False),
    )


def test_the_vocabulary_takes_the_vectors_it_finds_and_random_ones_elsewhere() -> None:
    tokenizer = build_vocabulary(["good film", "good film", "bad plot", "bad plot"] * 2,
                                 max_size=100, min_frequency=1)  # fmt: skip
    # "Film" only in another case; "plot" missing; "extra" not in the vocabulary.
    vectors = vectors_of({"good": [1, 2], "Film": [3, 4], "bad": [5, 6], "extra": [7, 8]})
    matrix, covered = embedding_matrix(tokenizer, vectors, seed=0)
    ids = tokenizer.get_vocab()
    np.testing.assert_array_equal(matrix[ids["good"]], [1, 2])
    np.testing.assert_array_equal(matrix[ids["film"]], [3, 4])
    assert np.abs(matrix[ids["plot"]]).max() <= RANDOM_VECTOR_RANGE
    assert not matrix[PAD_ID].any()
    assert [bool(covered[ids[w]]) for w in ("good", "film", "bad", "plot")] == [
        True,
        True,
        True,
        False,
    ]
    assert not covered[UNKNOWN_ID]
    again, _ = embedding_matrix(tokenizer, vectors, seed=0)
    np.testing.assert_array_equal(matrix, again)  # seeded


def test_static_vectors_are_frozen_and_non_static_ones_train() -> None:
    matrix = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    for mode, trains in (("static", False), ("non-static", True)):
        layer = torch.nn.Embedding(6, 2, padding_idx=0)
        install(layer, PretrainedEmbeddings(matrix, mode, "v:1", 4, 4, 10, 12))
        assert torch.equal(layer.weight, matrix)
        assert layer.weight.requires_grad is trains
    with pytest.raises(ValueError, match="the embedding layer is"):
        install(torch.nn.Embedding(6, 3), PretrainedEmbeddings(matrix, "static", "v:1", 4, 4, 1, 1))


def test_random_vectors_are_kims() -> None:
    layer = torch.nn.Embedding(50, 8, padding_idx=0)
    random_vectors(layer)
    weights = layer.weight.detach()
    assert float(weights.abs().max()) <= RANDOM_VECTOR_RANGE
    assert not weights[0].any()


def test_textcnn_defaults_are_kims() -> None:
    defaults = RECIPES["textcnn"].defaults()
    assert (defaults["filter_widths"], defaults["n_filters"], defaults["dropout"]) == (
        [3, 4, 5],
        100,
        0.5,
    )
    assert (defaults["optimizer"], defaults["learning_rate"], defaults["batch_size"]) == (
        "adadelta",
        1.0,
        50,
    )
    assert (defaults["max_norm"], defaults["embedding_dim"]) == (3.0, 300)
    assert defaults["embeddings"] is None
    assert defaults["embeddings_mode"] == "non-static"
    for name in ("bilstm", "gru", "transformer_encoder", "bilstm_tagger"):
        assert RECIPES[name].defaults()["embeddings"] is None


def test_max_norm_caps_each_labels_output_weights() -> None:
    network = TextCNN(TextCNNConfig(vocab_size=10, n_labels=3, embedding_dim=4), max_norm=3.0)
    with torch.no_grad():
        network.head.weight.fill_(5.0)
        network.head.weight[2].fill_(0.01)
        small = network.head.weight[2].clone()
        network.apply_constraints()
    weights = network.head.weight.detach()
    torch.testing.assert_close(weights[:2].norm(dim=1), torch.full((2,), 3.0))
    assert torch.equal(weights[2], small)  # under the cap: untouched


def test_adadelta_is_an_optimizer_choice() -> None:
    network = torch.nn.Linear(2, 2)
    settings = LoopSettings.from_hyperparameters(
        {**COMMON_DEFAULTS, "optimizer": "adadelta", "learning_rate": 1.0}
    )
    optimizer = build_optimizer(network, settings)
    assert isinstance(optimizer, torch.optim.Adadelta)
    assert optimizer.defaults["rho"] == 0.95
