"""What a Keras 3 `.keras` file holds, read from its JSON config alone (Keras is not imported).

A `.keras` file is a zip of `config.json` (the model's architecture), `metadata.json` and
`model.weights.h5`, plus `assets/` (a `TextVectorization` layer's vocabulary). Registration
reads it here to tell the task and to refuse what must never load: a `Lambda` layer (its
config carries Python bytecode), any custom object (a class or function from a module other
than Keras's own: loading it imports that module) and Keras APIs that are not layers. Keras's
own `safe_mode` refuses the same when the runtime loads the file; this check runs first, on
every registration, and names the layer.

Example::

    keras_file = read_keras_file(Path("sentiment.keras"))
    keras_file.task  # -> "text-classification"
    keras_file.output_units, keras_file.output_activation  # -> (2, "softmax")
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from openmaas.errors import PayloadTooLarge, UnsafeArtifact, UnsupportedSource
from openmaas.tasks.names import Task

KERAS_SUFFIX = ".keras"
CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
# A model's architecture is kilobytes; an inline vocabulary of 200k words is a few MiB.
MAX_CONFIG_BYTES = 32 << 20
# Layers whose config is run, or that read files outside the archive (TFSMLayer loads a
# TensorFlow SavedModel by path).
REFUSED_LAYERS = frozenset({"Lambda", "TFSMLayer"})
# Special object kinds of Keras's serialization format that carry data, not code.
DATA_OBJECTS = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
)
# Keras packages that hold no modeling objects (file access, global switches, datasets).
REFUSED_MODULES = (
    "keras.utils",
    "keras.saving",
    "keras.config",
    "keras.backend",
    "keras.preprocessing",
    "keras.src.utils",
    "keras.src.saving",
    "keras.src.backend",
    "keras.src.legacy",
    "keras.src.datasets",
)
# Layers after which a network's input is text: the model begins with token ids.
TEXT_INPUT_LAYERS = frozenset({"Embedding", "TextVectorization"})
IMAGE_LAYERS = frozenset({"Conv2D", "SeparableConv2D", "DepthwiseConv2D", "MaxPooling2D"})
TEXT_VECTORIZATION = "TextVectorization"


@dataclass(frozen=True, slots=True)
class KerasInput:
    dtype: str  # "int32", "float32", "string", ...
    shape: tuple[int | None, ...]  # without the batch dimension


@dataclass(frozen=True, slots=True)
class KerasFile:
    """A `.keras` file's architecture, checked safe to load."""

    path: Path
    config: dict[str, Any]  # the model's serialized config (config.json)
    layers: tuple[dict[str, Any], ...]  # the serialized layers, in order
    inputs: tuple[KerasInput, ...]
    output_units: int | None  # the last layer's width, when it is a Dense layer
    output_activation: str | None  # "softmax", "sigmoid", "linear", ...
    unpacked_bytes: int  # the archive's members, uncompressed
    assets: tuple[str, ...]  # member names under assets/

    @property
    def sequential(self) -> bool:
        return self.config.get("class_name") == "Sequential"

    @property
    def vectorizer(self) -> dict[str, Any] | None:
        """The config of a `TextVectorization` layer that begins a Sequential model."""
        first = next((layer for layer in self.layers if _class(layer) != "InputLayer"), None)
        if first is not None and _class(first) == TEXT_VECTORIZATION:
            config: dict[str, Any] = first.get("config") or {}
            return config
        return None

    @property
    def layer_classes(self) -> tuple[str, ...]:
        return tuple(_class(layer) for layer in self.layers)

    @property
    def task(self) -> str | None:
        """The task the architecture serves, when it is a classifier this server knows."""
        if self.output_units is None:
            return None
        classes = set(self.layer_classes)
        text_input = any(i.dtype == "string" for i in self.inputs)
        if text_input or classes & TEXT_INPUT_LAYERS:
            return Task.TEXT_CLASSIFICATION.value
        if classes & IMAGE_LAYERS or any(len(i.shape) == 3 for i in self.inputs):
            return Task.IMAGE_CLASSIFICATION.value
        return None


def keras_file_in(names: Sequence[str]) -> str | None:
    """The one top-level `.keras` file among a model's files (None: none); refuses several."""
    found = sorted(n for n in names if "/" not in n and n.endswith(KERAS_SUFFIX))
    if len(found) > 1:
        raise UnsupportedSource(
            f"the model holds several .keras files ({', '.join(found)}); register one at a time",
            param="source",
        )
    return found[0] if found else None


def read_keras_file(path: Path) -> KerasFile:
    """Read and check a `.keras` file's config; UnsupportedSource when it is no readable
    Keras 3 file, UnsafeArtifact when loading it would run code."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            info = members.get(CONFIG_MEMBER)
            if info is None or WEIGHTS_MEMBER not in members:
                raise _not_keras(path, f"it lacks {CONFIG_MEMBER} or {WEIGHTS_MEMBER}")
            if info.file_size > MAX_CONFIG_BYTES:
                raise PayloadTooLarge(
                    f"{path.name}: {CONFIG_MEMBER} unpacks to {info.file_size} bytes (at most "
                    f"{MAX_CONFIG_BYTES})",
                    param="file",
                )
            raw = archive.read(info)
            unpacked = sum(member.file_size for member in members.values())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise _not_keras(path, f"it is not a readable zip archive ({exc})") from exc
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_keras(path, f"its {CONFIG_MEMBER} is not JSON ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise _not_keras(path, f"its {CONFIG_MEMBER} is not a serialized Keras model")
    check_safe(config, path.name)
    layers = tuple(
        layer for layer in config["config"].get("layers") or [] if isinstance(layer, dict)
    )
    units, activation = _output(config, layers)
    return KerasFile(
        path=path,
        config=config,
        layers=layers,
        inputs=_inputs(config, layers),
        output_units=units,
        output_activation=activation,
        unpacked_bytes=unpacked,
        assets=tuple(sorted(name for name in members if name.startswith("assets/"))),
    )


def check_safe(config: Mapping[str, Any], file_name: str) -> None:
    """Refuse a config that names a Lambda layer, a custom object or a non-modeling Keras API.
    The compile config (optimizer, loss) is skipped: models load uncompiled."""
    for obj in _objects({k: v for k, v in config.items() if k != "compile_config"}):
        class_name = str(obj.get("class_name"))
        module = obj.get("module")
        registered = obj.get("registered_name")
        layer = (
            (obj.get("config") or {}).get("name") if isinstance(obj.get("config"), dict) else None
        )
        where = f"layer {layer!r} ({class_name})" if layer else repr(class_name)
        if class_name in REFUSED_LAYERS or class_name == "__lambda__":
            kind = "Lambda" if class_name in ("Lambda", "__lambda__") else class_name
            raise UnsafeArtifact(
                f"refused {file_name!r}: {where} is a {kind} layer, whose Python code would "
                f"run when the model loads; rebuild the model from Keras's built-in layers "
                "(or move the computation out of the model) and save it again",
                param="file",
            )
        if class_name.startswith("__") and class_name not in DATA_OBJECTS:
            raise UnsafeArtifact(
                f"refused {file_name!r}: it holds a serialized {class_name} object",
                param="file",
            )
        settings = obj.get("config")
        if isinstance(settings, dict) and isinstance(settings.get("vocabulary"), str):
            raise UnsafeArtifact(
                f"refused {file_name!r}: {where} reads its vocabulary from the path "
                f"{settings['vocabulary']!r}; a model file may not name files to read",
                param="file",
            )
        custom = isinstance(registered, str) and ">" in registered
        foreign = isinstance(module, str) and not _keras_module(module)
        if custom or foreign:
            origin = f" from module {module!r}" if isinstance(module, str) else ""
            raise UnsafeArtifact(
                f"refused {file_name!r}: {where} is a custom object{origin}; only Keras's "
                "built-in layers load here, because loading a custom one imports and runs "
                "its code",
                param="file",
            )
        if isinstance(module, str) and module.startswith(REFUSED_MODULES):
            raise UnsafeArtifact(
                f"refused {file_name!r}: {where} from {module!r} is not a model layer",
                param="file",
            )


def _keras_module(module: str) -> bool:
    # "builtins" names Keras's own functions (activations) by name.
    return module in ("keras", "builtins") or module.startswith("keras.")


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object (a dict with a class_name) in a config, depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "class_name" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _class(layer: Mapping[str, Any]) -> str:
    return str(layer.get("class_name", ""))


def _inputs(
    config: Mapping[str, Any], layers: Sequence[Mapping[str, Any]]
) -> tuple[KerasInput, ...]:
    found = []
    for layer in layers:
        if _class(layer) != "InputLayer":
            continue
        spec = layer.get("config") or {}
        shape = spec.get("batch_shape") or spec.get("batch_input_shape") or [None]
        found.append(KerasInput(_dtype(spec.get("dtype")), tuple(shape[1:])))
    if found:
        return tuple(found)
    # A Sequential model built without keras.Input records only the shape it was built on.
    built = (config.get("build_config") or {}).get("input_shape")
    first = layers[0].get("config") or {} if layers else {}
    if isinstance(built, list) and built:
        dtype = (
            "int32" if layers and _class(layers[0]) == "Embedding" else _dtype(first.get("dtype"))
        )
        return (KerasInput(dtype, tuple(built[1:])),)
    return ()


def _dtype(value: Any) -> str:
    if isinstance(value, dict):  # a DTypePolicy
        return str((value.get("config") or {}).get("name", "float32"))
    return str(value or "float32")


def _output(
    config: Mapping[str, Any], layers: Sequence[Mapping[str, Any]]
) -> tuple[int | None, str | None]:
    """(units, activation) of the layer that produces the model's one output."""
    if not layers:
        return None, None
    last: Mapping[str, Any] = layers[-1]
    outputs = config["config"].get("output_layers")
    if outputs is not None:  # a Functional model: [[name, 0, 0]] or [name, 0, 0]
        names = (
            [o[0] for o in outputs if isinstance(o, list)]
            if outputs and isinstance(outputs[0], list)
            else [outputs[0]]
        )
        if len(names) != 1:
            return None, None
        last = next((layer for layer in layers if layer.get("name") == names[0]), last)
    activation = None
    if _class(last) == "Activation":  # Dense(n) followed by Activation("softmax")
        activation = _activation((last.get("config") or {}).get("activation"))
        index = list(layers).index(last)
        last = layers[index - 1] if index > 0 else last
    if _class(last) != "Dense":
        return None, None
    spec = last.get("config") or {}
    units = spec.get("units")
    if not isinstance(units, int) or units < 1:
        return None, None
    return units, activation or _activation(spec.get("activation"))


def _activation(value: Any) -> str:
    if isinstance(value, dict):  # {"module": "keras.activations", "config": "softmax", ...}
        inner = value.get("config")
        return str(inner if isinstance(inner, str) else value.get("class_name", "linear"))
    return str(value or "linear")


def _not_keras(path: Path, why: str) -> UnsupportedSource:
    return UnsupportedSource(
        f"{path.name} is not a Keras 3 .keras file: {why}; save the model with "
        f"model.save('{PurePosixPath(path.name).stem}.keras')",
        param="file",
    )
