"""TextCNN (Kim 2014) trained from scratch as the paper trained it: filter widths 3/4/5 with
100 maps each, ReLU, max-over-time pooling, dropout 0.5 on the pooled features, the output
layer's weight vectors held to an L2 norm of at most 3 (`max_norm`), Adadelta (rho 0.95,
step scale 1.0), mini-batches of 50, 300-dimensional word vectors started uniform in
[-0.25, 0.25], over a word-level vocabulary of the training texts. Kim ran 25 epochs and kept
the best on a validation split; here 25 is the most, and early stopping (patience 3, on
validation accuracy) ends most runs sooner. Served by the `openmaas-nn` runtime.

CNN-rand is the default; CNN-static and CNN-non-static name registered word vectors in
`embeddings` (a `word2vec` job's output, or imported text vectors) with `embeddings_mode`
`static` or `non-static` (`training.pretrained_embeddings`); the layer then takes the
vectors' width.

Measured on SST-2 (15,000 training phrases, 4 epochs, dev accuracy; one torch thread on a
loaded 2-core machine), what the choices buy and cost:

- the start of the word vectors: uniform [-0.25, 0.25] (Kim) 0.782, torch's N(0, 1) 0.750;
- the optimizer: Adadelta's validation accuracy after epochs 1 and 2 was 0.842 and 0.870,
  AdamW's (1e-3) 0.819 and 0.852 (N(0, 1) start: Adadelta 0.750 on dev, AdamW 0.732). Its
  step costs about twice AdamW's fused one (Adadelta updates the whole 300-d embedding table
  in several passes): 200 ms against 100 ms per batch of 50, one thread, load ~12;
- the width: 300-d vectors make a step 2.5 times as long as 128-d ones (200 ms against
  80 ms). Kept for the paper's sake and for pretrained vectors, which are 300-d; pass
  `"embedding_dim": 128` for a quicker, slightly weaker CNN-rand.

docs/benchmarks.md has the SST-2 section; its AG News, BBC and tweet figures predate these
defaults (128-d vectors, AdamW 3e-3, 5 epochs: 0.830 on AG News in 17 s).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openmaas.training.hyperparameters import (
    COMMON_DEFAULTS,
    VOCABULARY_DEFAULTS,
    check_vocabulary,
    non_negative_float,
    positive_int,
    positive_int_list,
)
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.classification import ClassificationRecipe

DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    **VOCABULARY_DEFAULTS,
    "n_epochs": 25,  # Kim's; early stopping on the validation split ends most runs sooner
    "patience": 3,
    "early_stopping_metric": "accuracy",
    "batch_size": 50,  # Kim's mini-batch
    "optimizer": "adadelta",  # Kim's (Zeiler 2012), rho 0.95
    "learning_rate": 1.0,  # Adadelta's step scale, as in the paper
    "schedule": "constant",
    "weight_decay": 0.0,  # Kim regularizes with dropout and the max-norm only
    "max_grad_norm": 0.0,
    "dropout": 0.5,  # on the pooled features (Kim)
    "max_norm": 3.0,  # on each label's output weights after every step (Kim's s = 3); 0: off
    "max_length": 128,
    "embedding_dim": 300,  # Kim's (the word2vec width); pretrained vectors bring their own
    "filter_widths": [3, 4, 5],  # tokens per window (Kim)
    "n_filters": 100,  # feature maps per width (Kim)
}


class TextCNNRecipe(ClassificationRecipe):
    name = "textcnn"
    data_parallel = True  # the shared loop over a word-level vocabulary
    batch_size_scales_with_data = True
    description = "TextCNN (Kim 2014) from scratch: the fastest recipe, strong on short texts"
    # Kim (2014)'s knobs around his values: rate, dropout, feature maps, embedding width.
    search_space = {
        # Adadelta's step scale (the default optimizer; Kim's is 1.0), not an AdamW rate.
        "learning_rate": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
        "dropout": {"type": "float", "low": 0.1, "high": 0.6},
        "n_filters": {"type": "int", "low": 32, "high": 160, "step": 32},
        "embedding_dim": {"type": "categorical", "choices": [64, 128, 256]},
        "batch_size": {"type": "categorical", "choices": [16, 32, 50, 64]},
    }

    def defaults(self) -> dict[str, Any]:
        return {**DEFAULTS, "filter_widths": list(DEFAULTS["filter_widths"])}

    def check(self, hp: Mapping[str, Any]) -> None:
        check_vocabulary(hp)
        positive_int_list(hp, "filter_widths")
        positive_int(hp, "n_filters")
        positive_int(hp, "embedding_dim")
        non_negative_float(hp, "max_norm")

    def train(self, ctx: TrainingContext) -> TrainingResult:
        from openmaas.nn.saved import LONGEST_INPUT_TOKENS
        from openmaas.nn.textcnn import TextCNN, TextCNNConfig
        from openmaas.training.pretrained_embeddings import random_vectors
        from openmaas.training.recipes.word_level import WordLevelRun

        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        run = WordLevelRun.prepare(ctx, hp)
        network = TextCNN(
            TextCNNConfig(
                vocab_size=run.vocab_size,
                n_labels=len(run.labels),
                embedding_dim=run.embedding_width("embedding_dim"),
                filter_widths=tuple(positive_int_list(hp, "filter_widths")),
                n_filters=hp["n_filters"],
                dropout=hp["dropout"],
            ),
            max_norm=float(hp["max_norm"]),
        )
        random_vectors(network.embedding)  # Kim's; pretrained vectors replace them
        return run.train_and_save(
            self.name,
            "textcnn",
            network,
            max_input_tokens=LONGEST_INPUT_TOKENS,
            embedding=network.embedding,
        )
