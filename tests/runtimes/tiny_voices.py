"""A tiny Piper voice built in the test: an ONNX graph with Piper's exact signature (`input`
int64 [1, T], `input_lengths` int64 [1], `scales` float [3], optionally `sid` int64 [1]; one
float output [1, 1, samples]) and a matching Piper config. No Piper voice can be downloaded
here, so the graph makes a deterministic waveform instead of speech: for every phoneme id, a
tone of `BASE_HZ + STEP_HZ * id` lasting `SAMPLES_PER_ID * length_scale` samples, at amplitude
`AMPLITUDE * (1 + sid)`. From the audio a test can read back which ids the runtime sent."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 16_000  # Hz: not espeak-ng's 22,050, so tests see the voice's own rate
SAMPLES_PER_ID = 160  # 10 ms per phoneme id at length scale 1
BASE_HZ, STEP_HZ = 200.0, 40.0
AMPLITUDE = 0.2
# Piper's specials, a few IPA phonemes, punctuation and the space, as real configs map them.
PHONEME_ID_MAP: dict[str, list[int]] = {
    "_": [0],
    "^": [1],
    "$": [2],
    " ": [3],
    ".": [4],
    ",": [5],
    "!": [6],
    "?": [7],
    **{p: [8 + i] for i, p in enumerate("abdefhiklmnoprstuvwzæðŋɐɑɔəɛɜɪɹʃʊʌʒθˈˌː")},  # noqa: RUF001 - IPA
}


def build_piper_voice(directory: Path, *, speakers: tuple[str, ...] = ()) -> Path:
    """`directory` holding `tiny.onnx` and `tiny.onnx.json`; `speakers` makes it a voice of
    several speakers (the graph then takes `sid`)."""
    import onnx
    from onnx import TensorProto, helper

    directory.mkdir(parents=True, exist_ok=True)
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
        helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
    ]
    constants = {
        "base_hz": BASE_HZ,
        "step_hz": STEP_HZ,
        "samples_per_id": float(SAMPLES_PER_ID),
        "two_pi_over_rate": 2 * math.pi / RATE,
        "amplitude": AMPLITUDE,
        "one": 1.0,
    }
    initializers = [
        helper.make_tensor(name, TensorProto.FLOAT, [], [value])
        for name, value in constants.items()
    ]
    initializers += [
        helper.make_tensor("length_index", TensorProto.INT64, [], [1]),
        helper.make_tensor("zero_i", TensorProto.INT64, [], [0]),
        helper.make_tensor("one_i", TensorProto.INT64, [], [1]),
        helper.make_tensor("last_axis", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("out_shape", TensorProto.INT64, [3], [1, 1, -1]),
    ]
    nodes = [
        helper.make_node("Cast", ["input"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_f", "step_hz"], ["steps"]),
        helper.make_node("Add", ["steps", "base_hz"], ["hz"]),  # [1, T]
        helper.make_node("Gather", ["scales", "length_index"], ["length_scale"]),
        helper.make_node("Mul", ["samples_per_id", "length_scale"], ["n_f"]),
        helper.make_node("Round", ["n_f"], ["n_round"]),
        helper.make_node("Cast", ["n_round"], ["n"], to=TensorProto.INT64),
        helper.make_node("Range", ["zero_i", "n", "one_i"], ["t_i"]),
        helper.make_node("Cast", ["t_i"], ["t"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["t", "two_pi_over_rate"], ["radians"]),  # [n]
        helper.make_node("Unsqueeze", ["hz", "last_axis"], ["hz3"]),  # [1, T, 1]
        helper.make_node("Mul", ["hz3", "radians"], ["phase"]),  # [1, T, n]
        helper.make_node("Sin", ["phase"], ["wave"]),
        helper.make_node("Mul", ["wave", "amplitude"], ["quiet"]),
    ]
    last = "quiet"
    if speakers:
        inputs.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
        nodes += [
            helper.make_node("Cast", ["sid"], ["sid_f"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["sid_f", "one"], ["loudness"]),
            helper.make_node("Mul", ["quiet", "loudness"], ["loud"]),
        ]
        last = "loud"
    nodes.append(helper.make_node("Reshape", [last, "out_shape"], ["output"]))
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "samples"])
    graph = helper.make_graph(nodes, "tiny-piper", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, directory / "tiny.onnx")
    config = {
        "dataset": "tiny",
        "audio": {"sample_rate": RATE, "quality": "x_low"},
        "espeak": {"voice": "en-us"},
        "language": {"code": "en_US"},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": PHONEME_ID_MAP,
        "num_symbols": 256,
        "num_speakers": max(1, len(speakers)),
        "speaker_id_map": {name: i for i, name in enumerate(speakers)},
        "piper_version": "1.0.0",
    }
    (directory / "tiny.onnx.json").write_text(json.dumps(config, ensure_ascii=False))
    return directory


def ids_heard(samples: npt.NDArray[np.float32], samples_per_id: int) -> list[int]:
    """The phoneme ids the tiny voice spoke: each segment's tone, read back by its strongest
    frequency."""
    ids = []
    for start in range(0, samples.size - samples_per_id + 1, samples_per_id):
        segment = samples[start : start + samples_per_id]
        spectrum = np.abs(np.fft.rfft(segment, n=RATE))  # 1 Hz bins
        ids.append(round((int(np.argmax(spectrum)) - BASE_HZ) / STEP_HZ))
    return ids
