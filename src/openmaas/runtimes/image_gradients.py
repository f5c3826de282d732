"""Integrated gradients for image classifiers whose networks are torch: Captum's
`IntegratedGradients` at the pixels the network reads (after the model's resizing and
normalization), from the preprocessed black image to the preprocessed image, of the explained
label's probability; summed over channels.

Where each of those pixels lies in the image as sent is measured, not assumed: the
preprocessing (resize, crop, normalize: affine in the pixel values) is run on horizontal and
vertical ramps whose values are the original pixels' positions, and read back. So a
processor that crops (a centre crop) or keeps the aspect ratio maps its pixels right without
this module knowing its geometry.

The path's points run through the network in passes of at most `MAX_PATH_VALUES_PER_PASS`
input values (steps times the input's size), so a large input costs more passes, not more
memory.

Example::

    scores, delta = integrated_gradients_pixels(network_logits, inputs, baseline, 2, steps=32)
    xs, ys = sampled_coordinates(preprocess, height=28, width=28, channels=1)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from openmaas.tasks.image_regions import Floats

MAX_PATH_VALUES_PER_PASS = 1 << 23  # 8 Mi floats: 32 MB of inputs per pass, and their grads
# Below this a ramp's preprocessing is taken as constant (a channel the processor zeroes).
FLAT = 1e-6

Preprocess = Callable[[Floats], torch.Tensor]  # H x W x C in [0, 1] -> (1, C, h, w)


def integrated_gradients_pixels(
    logits: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    baseline: torch.Tensor,
    index: int,
    *,
    steps: int,
) -> tuple[Floats, float]:
    """Per pixel of `inputs` (1, C, h, w), summed over channels: its attribution to the
    softmax probability of output `index` of `logits` (batch -> (batch, labels)); and the
    approximation error against probability(inputs) - probability(baseline)."""
    from captum.attr import IntegratedGradients  # imported on first use: it is large

    def probability(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits(batch).float(), dim=-1)[:, index]

    per_pass = max(1, min(steps, MAX_PATH_VALUES_PER_PASS // max(1, inputs[0].numel())))
    with torch.enable_grad():
        scores, delta = IntegratedGradients(probability).attribute(
            inputs,
            baselines=baseline,
            n_steps=steps,
            internal_batch_size=per_pass,
            return_convergence_delta=True,
        )
    per_pixel: Floats = scores.sum(dim=1)[0].detach().float().cpu().numpy()
    return per_pixel, float(delta.abs().max())


def sampled_coordinates(
    preprocess: Preprocess, *, height: int, width: int, channels: int
) -> tuple[Floats, Floats]:
    """For each pixel of the preprocessed image (h x w), where its centre lies in the
    original image (x, y in its pixels), read from ramps through `preprocess`."""

    def read(image: Floats) -> Floats:
        first: Floats = preprocess(image)[0, 0].detach().float().cpu().numpy()
        return first

    shape = (height, width, channels)
    black = read(np.zeros(shape, dtype=np.float32))
    white = read(np.ones(shape, dtype=np.float32))
    scale = white - black
    scale = np.where(np.abs(scale) < FLAT, 1.0, scale).astype(np.float32)
    across = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :, None]
    down = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None, None]
    xs = (read(np.broadcast_to(across, shape).astype(np.float32)) - black) / scale * width
    ys = (read(np.broadcast_to(down, shape).astype(np.float32)) - black) / scale * height
    return xs.astype(np.float32), ys.astype(np.float32)
