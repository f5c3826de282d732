"""Tiny Keras 3 text classifiers, trained for a few steps on a handful of sentences and saved
as users save them (`model.save("x.keras")`), with their preprocessing beside or inside.

Keras's `TextVectorization` layer needs TensorFlow, which is no dependency here: the model
with the layer inside is written in the format Keras on TensorFlow writes (the layer's
`get_config()` before the rest of the Sequential model, its vocabulary as the asset
`assets/layers/text_vectorization/vocabulary.txt`, as `IndexLookup.save_assets` stores it).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openmaas.runtimes.keras import import_keras
from openmaas.runtimes.keras_text import KerasTokenizer, Vectorizer, with_special_tokens

TEXTS = [
    "a great film, loved it",
    "wonderful acting and a moving story",
    "brilliant, I would watch it again",
    "terrible plot and awful acting",
    "boring, I left early",
    "the worst film of the year",
]
LABELS = np.array([1, 1, 1, 0, 0, 0])
LENGTH = 8  # tokens per text the networks take
SEED = 7


@dataclass(frozen=True)
class BuiltModel:
    directory: Path  # what is uploaded: the .keras file and its preprocessing
    expected: np.ndarray[Any, Any]  # Keras's own output for TEXTS, (len(TEXTS), classes)


def vocabulary() -> list[str]:
    words = sorted({w for text in TEXTS for w in Vectorizer(["", "[UNK]"]).tokens(text)})
    return with_special_tokens(words, "int")


def _train(model: Any, inputs: np.ndarray[Any, Any], loss: str) -> np.ndarray[Any, Any]:
    keras = import_keras()
    keras.utils.set_random_seed(SEED)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
    model.fit(inputs, LABELS, epochs=5, batch_size=6, verbose=0)
    return np.asarray(model.predict(inputs, verbose=0))


def text_vectorization_lstm(directory: Path) -> BuiltModel:
    """Embedding + LSTM + Dense(softmax) behind a TextVectorization layer inside the file."""
    keras = import_keras()
    words = vocabulary()
    ids = Vectorizer(words, sequence_length=LENGTH).encode(TEXTS)
    model = keras.Sequential(
        [
            keras.Input(shape=(LENGTH,), dtype="int64"),
            keras.layers.Embedding(len(words), 8),
            keras.layers.LSTM(8),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    expected = _train(model, ids, "sparse_categorical_crossentropy")
    directory.mkdir(parents=True)
    plain = directory / "plain.keras"
    model.save(plain)
    _add_text_vectorization(plain, directory / "sentiment.keras", words)
    plain.unlink()
    (directory / "labels.txt").write_text("negative\npositive\n", encoding="utf-8")
    return BuiltModel(directory, expected)


def _add_text_vectorization(plain: Path, target: Path, words: list[str]) -> None:
    with zipfile.ZipFile(plain) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    config = json.loads(members["config.json"])
    layers = config["config"]["layers"]
    layers[0]["config"].update({"batch_shape": [None, 1], "dtype": "string"})
    layer_config = {
        "name": "text_vectorization",
        "trainable": True,
        "dtype": layers[1]["config"]["dtype"],
        "max_tokens": None,
        "standardize": "lower_and_strip_punctuation",
        "split": "whitespace",
        "ngrams": None,
        "output_mode": "int",
        "output_sequence_length": LENGTH,
        "pad_to_max_tokens": False,
        "sparse": False,
        "ragged": False,
        "vocabulary": None,
        "idf_weights": None,
        "encoding": "utf-8",
        "vocabulary_size": len(words),
    }
    layers.insert(
        1,
        {
            "module": "keras.layers",
            "class_name": "TextVectorization",
            "config": layer_config,
            "registered_name": None,
            "build_config": {"input_shape": [None, 1]},
        },
    )
    config["config"]["build_input_shape"] = [None, 1]
    config["build_config"] = {"input_shape": [None, 1]}
    members["config.json"] = json.dumps(config).encode()
    members["assets/layers/text_vectorization/vocabulary.txt"] = "\n".join(words).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def vocabulary_conv1d(directory: Path) -> BuiltModel:
    """Embedding + Conv1D + pooling + Dense(1, sigmoid) over token ids, vocabulary.txt beside."""
    keras = import_keras()
    words = vocabulary()
    ids = Vectorizer(words, sequence_length=LENGTH).encode(TEXTS)
    model = keras.Sequential(
        [
            keras.Input(shape=(LENGTH,), dtype="int64"),
            keras.layers.Embedding(len(words), 8),
            keras.layers.Conv1D(8, 3, activation="relu"),
            keras.layers.GlobalMaxPooling1D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    positive = _train(model, ids, "binary_crossentropy")[:, 0]
    directory.mkdir(parents=True)
    model.save(directory / "reviews.keras")
    (directory / "vocabulary.txt").write_text("\n".join(words), encoding="utf-8")
    return BuiltModel(directory, np.stack([1 - positive, positive], axis=1))


def tokenizer_gru(directory: Path) -> BuiltModel:
    """Embedding + GRU + Dense(2) logits, with a keras Tokenizer's JSON (`to_json()`) beside:
    ids as `texts_to_sequences` and `pad_sequences(maxlen=LENGTH)` (padding "pre") give them."""
    keras = import_keras()
    words = sorted({w for text in TEXTS for w in KerasTokenizer(word_index={}).words(text)})
    index = {"<OOV>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    config = {
        "num_words": None,
        "filters": '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n',
        "lower": True,
        "split": " ",
        "char_level": False,
        "oov_token": "<OOV>",
        "document_count": len(TEXTS),
        "word_counts": "{}",
        "word_docs": "{}",
        "index_docs": "{}",
        "index_word": json.dumps({str(i): w for w, i in index.items()}),
        "word_index": json.dumps(index),
    }
    tokenizer_json = json.dumps({"class_name": "Tokenizer", "config": config})
    tokenizer = KerasTokenizer.from_json(
        tokenizer_json, sequence_length=LENGTH, padding="pre", truncating="pre"
    )
    ids = tokenizer.encode(TEXTS)
    model = keras.Sequential(
        [
            keras.Input(shape=(LENGTH,), dtype="int64"),
            keras.layers.Embedding(len(index) + 1, 8),
            keras.layers.GRU(8),
            keras.layers.Dense(2),
        ]
    )
    logits = _train(model, ids, "sparse_categorical_crossentropy")
    directory.mkdir(parents=True)
    model.save(directory / "gru.keras")
    (directory / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    (directory / "labels.json").write_text(json.dumps(["negative", "positive"]), encoding="utf-8")
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return BuiltModel(directory, shifted / shifted.sum(axis=1, keepdims=True))


def lambda_model(directory: Path) -> Path:
    """A model with a Lambda layer: its config carries the lambda's Python bytecode."""
    keras = import_keras()
    model = keras.Sequential(
        [
            keras.Input(shape=(LENGTH,), dtype="int64"),
            keras.layers.Embedding(len(vocabulary()), 4),
            keras.layers.Lambda(lambda x: x * 2),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    directory.mkdir(parents=True)
    model.save(directory / "lambda.keras")
    (directory / "vocabulary.txt").write_text("\n".join(vocabulary()), encoding="utf-8")
    return directory
