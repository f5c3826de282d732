"""Image explanations in-process: the grid's regions tile the image, attributions pool into
them without loss, and a small cnn (random weights, saved as the recipes save it) explained
by both methods through `tasks.image_explanation`: occlusion's scores are the probability
lost to a black region, integrated gradients' add up to the probability's rise from black.
The faithfulness benchmark's curves and section on the same model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from benchmarks import explanation_faithfulness_images as bench
from pydantic import ValidationError

from openmaas.errors import InvalidRequest
from openmaas.images import ImageLimits
from openmaas.nn.vision import (
    CNNConfig,
    SavedImageClassifier,
    SmallCNN,
    network_config,
    save_image_classifier,
)
from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
from openmaas.runtimes.vision import ImageClassifierModel
from openmaas.settings import Settings
from openmaas.tasks.image_explanation import IMAGE_EXPLANATION, ImageExplainParams
from openmaas.tasks.image_explanation_runner import explain_image
from openmaas.tasks.image_regions import grid_regions, occluded, pool
from tests.drawn_images import encoded
from tests.drawn_shapes import corner_squares, square_at


def test_regions_tile_the_image_and_pool_without_loss() -> None:
    regions = grid_regions(height=10, width=7, rows=3, cols=2)
    covered = np.zeros((10, 7), dtype=int)
    for region in regions:
        covered[region.y : region.y + region.height, region.x : region.x + region.width] += 1
    assert (covered == 1).all()
    assert [(r.row, r.col) for r in regions] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    # Scores of a 5 x 4 map of the 10 x 7 image: each lands in the region of its centre.
    scores = np.arange(20, dtype=np.float32).reshape(5, 4)
    xs = np.broadcast_to((np.arange(4) + 0.5) * 7 / 4, (5, 4)).astype(np.float32)
    ys = np.broadcast_to(((np.arange(5) + 0.5) * 10 / 5)[:, None], (5, 4)).astype(np.float32)
    pooled = pool(scores, xs, ys, height=10, width=7, rows=3, cols=2)
    assert sum(pooled) == pytest.approx(float(scores.sum()))
    # Row edges 0, 3, 6, 10 and column edges 0, 3, 7: centres y 1 | 3, 5 | 7, 9 and
    # x 0.9, 2.6 | 4.4, 6.1.
    assert pooled[0] == pytest.approx(0 + 1)
    assert pooled[2] == pytest.approx(4 + 5 + 8 + 9)
    pixels = np.ones((10, 7, 1), dtype=np.float32)
    blacked = occluded(pixels, regions[3])
    assert blacked.sum() == 70 - regions[3].width * regions[3].height
    assert pixels.sum() == 70  # the original is kept


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(0)
    config = CNNConfig(channels=1, height=16, width=16, n_labels=2, filters=(4,), dense_units=8)
    network = SmallCNN(config).eval()
    directory = tmp_path_factory.mktemp("cnn")
    saved = SavedImageClassifier(
        network=network,
        architecture="cnn",
        config=network_config(network, config),
        labels=("top-left", "bottom-right"),
        channels=1,
        height=16,
        width=16,
        mean=(0.2,),
        std=(0.3,),
    )
    save_image_classifier(directory, saved)
    source = ModelSource.for_directory(
        directory, task="image-classification", runtime="openmaas-vision"
    )
    return get_runtime("openmaas-vision").load(source, LoadOptions())


def test_both_methods_score_what_they_claim(cnn: Any) -> None:
    image, _ = square_at(24, 20, x=2, y=3, side=6, seed=1)  # resized to 16 x 16 by the model
    png = encoded(image)
    occlusion = explain_image(
        cnn, IMAGE_EXPLANATION.check(cnn, [png], ImageExplainParams("occlusion", grid=(2, 3)), "m")
    )
    assert (occlusion.width, occlusion.height, occlusion.passes) == (24, 20, 7)
    pixels = cnn.decode_images([png])[0]
    region = occlusion.regions[4]
    blacked = occluded(pixels, grid_regions(height=20, width=24, rows=2, cols=3)[4])
    lost = cnn.classify_images([blacked])[0]
    after = next(s.score for s in lost if s.label == occlusion.label)
    assert region.score == pytest.approx(occlusion.score - after, abs=1e-6)

    params = ImageExplainParams("integrated-gradients", grid=(4, 4), steps=64)
    gradients = explain_image(cnn, IMAGE_EXPLANATION.check(cnn, [png], params, "m"))
    black = cnn.classify_images([np.zeros_like(pixels)])[0]
    at_black = next(s.score for s in black if s.label == gradients.label)
    assert gradients.delta is not None
    total = sum(r.score for r in gradients.regions)
    assert total == pytest.approx(gradients.score - at_black, abs=gradients.delta + 1e-5)


def test_the_benchmark_curves_and_section(cnn: Any) -> None:
    test = [
        {"image": row["image"].split(",", 1)[1], "label": row["label"]}
        for row in corner_squares(2, seed=1)
    ]
    curves = bench.measure(cnn, test, steps=8, grid=4)
    assert curves.images == 4
    assert set(curves.drops) == {"integrated-gradients", "occlusion", "random"}
    assert all(len(drops) == len(bench.KS) for drops in curves.drops.values())
    assert len(curves.deltas) == 4
    section = bench.render_section(curves, bench.Plan.quick(), 4, 8, 0.1)
    assert section.startswith(bench.SECTION_HEADING)
    assert section.count("| occlusion |") == 1


class _LogitsOnly(ImageClassifierModel):
    """An image model written against `logits` alone: classified, and explained by occlusion
    only (its preprocessing is not separable from its network)."""

    labels = ("dark", "bright")
    tasks = frozenset({"image-classification"})
    image_channels = 1
    image_limits = ImageLimits()

    def logits(self, images: list[torch.Tensor]) -> torch.Tensor:
        brightness = torch.stack([image.mean() for image in images]) - 0.2
        return torch.stack([-brightness, brightness], dim=1) * 10


def test_a_model_without_separable_gradients_is_explained_by_occlusion() -> None:
    model = _LogitsOnly()
    image, _ = square_at(16, 16, x=0, y=0, side=8, seed=2)
    png = encoded(image)
    assert not model.explains_with_gradients
    with pytest.raises(InvalidRequest, match="use occlusion") as refused:
        IMAGE_EXPLANATION.check(model, [png], ImageExplainParams("integrated-gradients"), "m")
    assert refused.value.param == "method"
    item = IMAGE_EXPLANATION.check(model, [png], ImageExplainParams(grid=(2, 2)), "m")
    explained = explain_image(model, item)
    assert (explained.method, explained.label) == ("occlusion", "bright")
    # Blacking out the white square darkens the picture most: the region it fills leads.
    best = max(explained.regions, key=lambda r: r.score)
    assert (best.row, best.col, best.score > 0) == (0, 0, True)


def test_a_default_grid_past_the_region_cap_stops_the_server(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(home=tmp_path, explain_image_grid=12, explain_max_regions=100)
    message = str(refused.value)
    assert "OPENMAAS_EXPLAIN_IMAGE_GRID=12" in message
    assert "OPENMAAS_EXPLAIN_MAX_REGIONS=100" in message
    assert Settings(home=tmp_path, explain_image_grid=10, explain_max_regions=100)
