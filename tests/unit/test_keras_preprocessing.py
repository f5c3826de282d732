"""Keras text preprocessing reproduced without TensorFlow, and the `.keras` config checks:
expectations worked out by hand from Keras's documented rules (no Keras import here)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openmaas.errors import UnsafeArtifact, UnsupportedSource
from openmaas.runtimes.keras_files import check_safe, read_keras_file
from openmaas.runtimes.keras_intake import labels
from openmaas.runtimes.keras_text import KerasTokenizer, Vectorizer, pad, with_special_tokens


def test_text_vectorization_defaults_lowercase_ascii_and_strip_punctuation() -> None:
    vectorizer = Vectorizer(with_special_tokens(["great", "film", "well-made"], "int"))
    # tf.strings.lower lowercases ASCII only; the punctuation class holds the hyphen.
    assert vectorizer.tokens("A GREAT film, well-made!  Ça") == [
        "a",
        "great",
        "film",
        "wellmade",
        "Ça",
    ]


def test_text_vectorization_int_mode_pads_and_cuts_at_the_end() -> None:
    vectorizer = Vectorizer(["", "[UNK]", "great", "film"], sequence_length=4)
    np.testing.assert_array_equal(
        vectorizer.encode(["Great film", "a great great great film"]),
        [[2, 3, 0, 0], [1, 2, 2, 2]],
    )
    unbounded = Vectorizer(["", "[UNK]", "great", "film"])
    assert unbounded.encode(["film", "great film film"]).shape == (2, 3)


def test_text_vectorization_bag_of_words_modes() -> None:
    layer = {"output_mode": "multi_hot", "vocabulary": ["great", "film"], "ngrams": None}
    multi_hot = Vectorizer.from_layer_config(layer, [])
    np.testing.assert_array_equal(multi_hot.encode(["film film odd"]), [[1, 0, 1]])
    count = Vectorizer.from_layer_config({**layer, "output_mode": "count"}, [])
    np.testing.assert_array_equal(count.encode(["film film odd"]), [[1, 0, 2]])
    bigrams = Vectorizer.from_layer_config({**layer, "ngrams": 2}, [])
    assert bigrams.tokens("great film") == ["great", "film", "great film"]


def test_text_vectorization_configs_it_cannot_reproduce_are_refused() -> None:
    with pytest.raises(UnsupportedSource, match="tf_idf"):
        Vectorizer.from_layer_config({"output_mode": "tf_idf", "vocabulary": ["a"]}, [])
    with pytest.raises(UnsupportedSource, match="custom standardize"):
        Vectorizer.from_layer_config({"standardize": {"class_name": "f"}, "vocabulary": ["a"]}, [])
    with pytest.raises(UnsupportedSource, match="never adapted"):
        Vectorizer.from_layer_config({}, [])


def test_keras_tokenizer_sequences_and_pre_padding() -> None:
    word_index = {"<OOV>": 1, "the": 2, "cat": 3, "sat": 4, "mat": 5}
    text = json.dumps(
        {
            "class_name": "Tokenizer",
            "config": {"num_words": 5, "oov_token": "<OOV>", "word_index": json.dumps(word_index)},
        }
    )
    tokenizer = KerasTokenizer.from_json(text, sequence_length=6, padding="pre", truncating="pre")
    # "mat" has index 5, not below num_words=5: out of vocabulary, as is "dog".
    assert tokenizer.sequence("The cat sat on the mat!") == [2, 3, 4, 1, 2, 1]
    np.testing.assert_array_equal(tokenizer.encode(["the cat"]), [[0, 0, 0, 0, 2, 3]])
    with pytest.raises(UnsupportedSource, match="Tokenizer"):
        KerasTokenizer.from_json(
            '{"model": {}}', sequence_length=6, padding="pre", truncating="pre"
        )


def test_pad_sequences_options() -> None:
    rows = [[1, 2, 3, 4], [5]]
    np.testing.assert_array_equal(
        pad(rows, 3, padding="pre", truncating="pre"), [[2, 3, 4], [0, 0, 5]]
    )
    np.testing.assert_array_equal(
        pad(rows, 3, padding="post", truncating="post"), [[1, 2, 3], [5, 0, 0]]
    )


def _layer(class_name: str, module: str = "keras.layers", **extra: Any) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": {"name": "x"}, **extra}


def _model(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"module": "keras", "class_name": "Sequential", "config": {"layers": list(layers)}}


def test_configs_that_would_run_code_are_refused() -> None:
    check_safe(_model(_layer("Embedding"), _layer("Dense")), "ok.keras")
    lambda_layer = _layer("Lambda")
    lambda_layer["config"]["function"] = {"class_name": "__lambda__", "config": {"code": "..."}}
    for config, reason in [
        (_model(lambda_layer), "Lambda layer"),
        (_model(_layer("Dense", module="my_layers")), "custom object from module 'my_layers'"),
        (_model(_layer("Dense", registered_name="pkg>Dense")), "custom object"),
        (_model(_layer("get_file", module="keras.utils")), "not a model layer"),
        (_model(_layer("TFSMLayer")), "TFSMLayer"),
    ]:
        with pytest.raises(UnsafeArtifact, match=reason):
            check_safe(config, "m.keras")
    lookup = _layer("StringLookup")
    lookup["config"]["vocabulary"] = "/etc/passwd"
    with pytest.raises(UnsafeArtifact, match="path"):
        check_safe(_model(lookup), "m.keras")


def test_files_that_are_no_keras_model_are_refused(tmp_path: Path) -> None:
    (tmp_path / "text.keras").write_text("not a zip")
    with pytest.raises(UnsupportedSource, match="not a readable zip"):
        read_keras_file(tmp_path / "text.keras")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(UnsupportedSource, match="lacks config.json"):
        read_keras_file(tmp_path / "empty.keras")


def test_labels_must_match_the_output_width(tmp_path: Path) -> None:
    assert labels({}, {}, 3) == ("LABEL_0", "LABEL_1", "LABEL_2")
    assert labels({}, {"labels": ["no", "yes"]}, 1) == ("no", "yes")  # one sigmoid unit
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    assert labels({"labels.txt": tmp_path / "labels.txt"}, {}, 3) == ("a", "b", "c")
    with pytest.raises(UnsupportedSource, match="2 classes"):
        labels({"labels.txt": tmp_path / "labels.txt"}, {}, 2)
