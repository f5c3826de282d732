"""An image explanation's region scores drawn as a heatmap: an RGBA PNG of the image's size,
each region red where it supports the label and blue where it speaks against it, more opaque
the stronger it is (the strongest at `MAX_ALPHA`), transparent where its score is 0, so it
lays over the image as sent.

Example::

    png = heatmap_png(explanation.regions, height=explanation.height, width=explanation.width)
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from openmaas.tasks.image_explanation import RegionScore

SUPPORTS = (220, 30, 30)  # RGB
OPPOSES = (30, 80, 220)
# The most opaque a region's colour gets (the strongest region's |score|), of 255.
MAX_ALPHA = 160


def heatmap_png(regions: Sequence[RegionScore], *, height: int, width: int) -> bytes:
    strongest = max((abs(r.score) for r in regions), default=0.0)
    canvas = np.zeros((height, width, 4), dtype=np.uint8)
    for region in regions:
        if strongest <= 0 or region.score == 0:
            continue
        colour = SUPPORTS if region.score > 0 else OPPOSES
        alpha = round(MAX_ALPHA * abs(region.score) / strongest)
        box = canvas[region.y : region.y + region.height, region.x : region.x + region.width]
        box[...] = (*colour, alpha)
    out = io.BytesIO()
    Image.fromarray(canvas, mode="RGBA").save(out, format="PNG")
    return out.getvalue()
