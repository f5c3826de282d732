"""Regions of an image, for explanations: a grid of `rows` x `cols` boxes over the image as
the caller sent it (pixel coordinates of the original, before any resizing a model does),
an image with one region blacked out (what occlusion scores), and per-pixel attributions
summed into the regions.

Region boundaries fall on whole pixels: row i spans pixels [i * height // rows,
(i + 1) * height // rows), so every region is at least one pixel when rows <= height; the
regions are listed row by row, left to right.

Example::

    regions = grid_regions(height=28, width=28, rows=4, cols=4)
    regions[5]  # Region(row=1, col=1, x=7, y=7, width=7, height=7)
    blacked = occluded(pixels, regions[5])
    sums = pool(scores, xs, ys, height=28, width=28, rows=4, cols=4)  # 16 floats
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# What an occluded region is filled with: black, the integrated-gradients baseline too.
FILL = 0.0

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Region:
    row: int
    col: int
    x: int  # left, in the original image's pixels
    y: int  # top
    width: int
    height: int


def edges(size: int, parts: int) -> list[int]:
    """Where `parts` equal slices of `size` pixels begin, and the end: parts + 1 values."""
    return [i * size // parts for i in range(parts + 1)]


def grid_regions(*, height: int, width: int, rows: int, cols: int) -> list[Region]:
    ys, xs = edges(height, rows), edges(width, cols)
    return [
        Region(r, c, xs[c], ys[r], xs[c + 1] - xs[c], ys[r + 1] - ys[r])
        for r in range(rows)
        for c in range(cols)
    ]


def occluded(pixels: Floats, region: Region) -> Floats:
    """A copy of the image (H x W x C) with the region filled with `FILL`."""
    copy = pixels.copy()
    copy[region.y : region.y + region.height, region.x : region.x + region.width] = FILL
    return copy


def pool(
    scores: Floats,
    xs: Floats,
    ys: Floats,
    *,
    height: int,
    width: int,
    rows: int,
    cols: int,
) -> list[float]:
    """Per region, the sum of the scores whose pixels' centres (`xs`, `ys`: where each scored
    pixel lies in the original image, in its pixels; same shape as `scores`) fall in it.
    Scores of a model's own resolution land in the regions of the image as sent, and the
    region scores add up to the pixel scores."""
    col_of = np.searchsorted(edges(width, cols), np.clip(xs, 0, width - 1e-3), side="right") - 1
    row_of = np.searchsorted(edges(height, rows), np.clip(ys, 0, height - 1e-3), side="right") - 1
    index = (row_of * cols + col_of).ravel()
    sums = np.bincount(index, weights=scores.ravel().astype(np.float64), minlength=rows * cols)
    return [float(s) for s in sums]
