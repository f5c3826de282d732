"""Which number format a training run computes in: bf16 autocast where the hardware has
bf16 arithmetic, fp32 otherwise.

`precision` is a hyperparameter: `fp32`, `bf16` (autocast even where the device only emulates
bf16) or `bf16-if-supported` (bf16 where the device has it in hardware, else fp32). Under
autocast the matrix products run in bf16 while the master weights, the optimizer's state and
the loss stay fp32, so no loss scaling is needed (bf16 keeps fp32's exponent range). On CPU,
support means the `avx512_bf16` or `amx_bf16` instructions (Intel Cooper Lake, Sapphire Rapids
and later, AMD Zen 4 and later); without them torch emulates bf16 and runs slower than fp32.
Torch-free except `supports_bf16` and `autocast`, so validating a job costs nothing.

Example::

    precision = resolve_precision("bf16-if-supported", bf16_supported=supports_bf16("cpu"))
    with autocast("cpu", precision):
        logits = network(**inputs)
    loss = F.cross_entropy(logits.float(), targets)
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

from openmaas.training.hyperparameters import PRECISIONS

# /proc/cpuinfo flags of the instructions that do bf16 arithmetic in hardware.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")

Precision = Literal["bf16", "fp32"]


def resolve_precision(requested: str, *, bf16_supported: bool) -> Precision:
    """The precision a run uses: `requested` (one of PRECISIONS) on a device whose hardware
    bf16 support is `bf16_supported` (`supports_bf16`)."""
    if requested not in PRECISIONS:
        raise ValueError(
            f"hyperparameter 'precision' must be one of {', '.join(PRECISIONS)}, got {requested!r}"
        )
    if requested == "bf16-if-supported":
        return "bf16" if bf16_supported else "fp32"
    return "bf16" if requested == "bf16" else "fp32"


def cpu_flags_have_bf16(flags: str) -> bool:
    """Whether a /proc/cpuinfo `flags` line (or the whole file) names a bf16 instruction."""
    return bool(CPU_BF16_FLAGS & set(flags.split()))


def supports_bf16(device_type: str) -> bool:
    """Whether the job's device computes in bf16 in hardware: a CUDA device that says so
    (compute capability 8.0 and later), a CPU whose flags name avx512_bf16 or amx_bf16
    (read from /proc/cpuinfo; elsewhere, fp32)."""
    if device_type == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type == "cpu":
        try:
            return cpu_flags_have_bf16(CPUINFO.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return False
    return False


def autocast(device_type: str, precision: Precision) -> AbstractContextManager[object]:
    """bf16 autocast on `device_type`, or nothing for fp32."""
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
