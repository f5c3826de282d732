"""Expected calibration error: how far a classifier's confidence is from its accuracy.

The examples are put in `n_bins` equal-width bins by their top probability (bin k holds
confidences in (k/n, (k+1)/n]; a confidence of exactly 0 goes to the first bin); the error
is the mean over bins of |accuracy - mean confidence|, weighted by the share of examples in
the bin (Guo et al. 2017, "On Calibration of Modern Neural Networks", with their 15 bins).

Example::

    calibration = expected_calibration_error([0.9, 0.6, 0.3], [True, False, True])
    calibration.ece  # (|1 - 0.9| + |0 - 0.6| + |1 - 0.3|) / 3 = 0.4667
    [b.count for b in calibration.bins if b.count]  # [1, 1, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

N_BINS = 15


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    lower: float  # confidences above this ...
    upper: float  # ... up to and including this
    count: int
    confidence: float  # mean top probability of its examples (0 when empty)
    accuracy: float  # share of its examples whose top label is the true one (0 when empty)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "confidence": self.confidence,
            "accuracy": self.accuracy,
        }


@dataclass(frozen=True, slots=True)
class Calibration:
    ece: float
    bins: tuple[CalibrationBin, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"ece": self.ece, "bins": [b.to_dict() for b in self.bins]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            ece=float(data["ece"]),
            bins=tuple(
                CalibrationBin(
                    lower=float(b["lower"]),
                    upper=float(b["upper"]),
                    count=int(b["count"]),
                    confidence=float(b["confidence"]),
                    accuracy=float(b["accuracy"]),
                )
                for b in data["bins"]
            ),
        )


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS
) -> Calibration:
    """The ECE of top probabilities `confidences` (each in [0, 1]) against whether each
    top label was right; 0 with no examples."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} outcomes")
    values = np.clip(np.asarray(confidences, dtype=np.float64), 0.0, 1.0)
    hits = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left": a confidence equal to an edge belongs to the bin that edge closes.
    index = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, n_bins - 1)
    total = len(values)
    bins = []
    ece = 0.0
    for k in range(n_bins):
        members = index == k
        count = int(members.sum())
        confidence = float(values[members].mean()) if count else 0.0
        accuracy = float(hits[members].mean()) if count else 0.0
        if count:
            ece += count / total * abs(accuracy - confidence)
        bins.append(
            CalibrationBin(
                lower=float(edges[k]),
                upper=float(edges[k + 1]),
                count=count,
                confidence=confidence,
                accuracy=accuracy,
            )
        )
    return Calibration(ece=ece, bins=tuple(bins))
