"""`slow_textcnn`: the textcnn recipe with every step delayed, so a browser can watch its curve
grow and cancel it mid-run. The console's test server and its worker load it through
OPENMAAS_EXTRA_RECIPES."""

from __future__ import annotations

import time
from typing import Any

from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.textcnn import TextCNNRecipe


class SlowTextCNN(TextCNNRecipe):
    name = "slow_textcnn"
    description = "textcnn, each step delayed by step_delay_s (for tests)."

    def defaults(self) -> dict[str, Any]:
        return {**super().defaults(), "step_delay_s": 0.0}

    def train(self, ctx: TrainingContext) -> TrainingResult:
        delay = float(ctx.hyperparameters.get("step_delay_s", 0.0))
        should_stop = ctx.should_stop

        def slowed() -> bool:  # the loop asks before every step
            time.sleep(delay)
            return should_stop()

        ctx.should_stop = slowed
        return super().train(ctx)
