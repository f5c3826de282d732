"""Which precision a training run uses: bf16 where asked or where the hardware has it, fp32
otherwise."""

from __future__ import annotations

import pytest

from openmaas.training.hyperparameters import LoopSettings
from openmaas.training.precision import cpu_flags_have_bf16, resolve_precision
from openmaas.training.recipes import RECIPES

# A /proc/cpuinfo `flags` line of a Cooper Lake Xeon and one of a Skylake Xeon (no bf16).
COOPER_LAKE = "fpu vme sse sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 arat"
SKYLAKE = "fpu vme sse sse2 avx2 avx512f avx512bw avx512cd arat"


@pytest.mark.parametrize(
    ("requested", "bf16_supported", "expected"),
    [
        ("bf16-if-supported", True, "bf16"),
        ("bf16-if-supported", False, "fp32"),  # the fallback: no bf16 arithmetic in hardware
        ("fp32", True, "fp32"),
        ("fp32", False, "fp32"),
        ("bf16", True, "bf16"),
        ("bf16", False, "bf16"),  # asked for: autocast runs, emulated
    ],
)
def test_precision_resolution(requested: str, bf16_supported: bool, expected: str) -> None:
    assert resolve_precision(requested, bf16_supported=bf16_supported) == expected


def test_cpu_support_is_read_from_the_flags() -> None:
    assert cpu_flags_have_bf16(COOPER_LAKE)
    assert not cpu_flags_have_bf16(SKYLAKE)
    assert cpu_flags_have_bf16("flags\t: fpu amx_bf16 amx_tile")  # Sapphire Rapids
    assert not cpu_flags_have_bf16("flags\t: fpu avx512_bf16x")  # whole flags only
    auto = resolve_precision("bf16-if-supported", bf16_supported=cpu_flags_have_bf16(SKYLAKE))
    assert auto == "fp32"


def test_a_bad_precision_names_the_hyperparameter() -> None:
    with pytest.raises(
        ValueError, match="'precision' must be one of bf16-if-supported, bf16, fp32"
    ):
        resolve_precision("fp16", bf16_supported=True)


def test_only_the_transformer_fine_tune_defaults_to_grouping() -> None:
    tuned = RECIPES["finetune_transformer"].resolve({}, 100)
    settings = LoopSettings.from_hyperparameters(tuned)
    assert (settings.group_by_length, settings.precision) == (True, "fp32")  # bf16: opt-in
    textcnn = LoopSettings.from_hyperparameters(RECIPES["textcnn"].resolve({}, 100))
    assert (textcnn.group_by_length, textcnn.precision) == (False, "fp32")
