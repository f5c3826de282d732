"""The training recipes, by name. Importing this is cheap: each recipe imports torch and its
networks only when it trains.

Text classification (examples `{"text": ..., "label": ...}`):

- `textcnn`, `bilstm`, `gru`, `transformer_encoder`: networks trained from scratch over a
  word-level vocabulary, served by the `openmaas-nn` runtime;
- `frozen_encoder`, `finetune_transformer`: a registered transformer encoder (the context's
  `base_model`) with a classification head, trained alone or with the encoder, saved as a
  Hugging Face sequence-classification directory served by the `transformers` runtime.

Token classification, named entities (examples `{"tokens": [...], "tags": [...]}`, BIO):

- `bilstm_tagger`: a BiLSTM over words and their casing, from scratch, served by the
  `openmaas-nn` runtime;
- `finetune_transformer_ner`: a registered transformer encoder fine-tuned with a
  token-classification head, served by the `transformers` runtime.

Embedding (examples `{"text": ...}`): `word2vec`, word vectors trained with gensim, served by
the `word2vec` runtime (a text's embedding is the mean of its words' vectors).

Text generation (examples `{"text": ...}`; chat files arrive rendered as ChatML): `gpt`, a
small GPT-2 with its own byte-level BPE tokenizer, from scratch, served by the
`transformers` runtime on `/v1/completions` and `/v1/chat/completions`.

Image classification (examples `{"image": <base64>, "label": ...}`): `cnn`, a classic
conv/pool/dropout/dense network, and `resnet`, ResNet-18 from scratch or fine-tuned from a
registered one; both served by the `openmaas-vision` runtime.

Example::

    recipe = RECIPES["textcnn"]
    hyperparameters = recipe.resolve({"n_epochs": 3}, n_examples=len(train))
"""

from __future__ import annotations

from openmaas.training.recipe import Recipe
from openmaas.training.recipes.bilstm import BiLSTMRecipe
from openmaas.training.recipes.bilstm_tagger import BiLSTMTaggerRecipe
from openmaas.training.recipes.cnn import CNNRecipe
from openmaas.training.recipes.finetune_transformer import FinetuneTransformerRecipe
from openmaas.training.recipes.frozen_encoder import FrozenEncoderRecipe
from openmaas.training.recipes.gru import GRURecipe
from openmaas.training.recipes.resnet import ResNetRecipe
from openmaas.training.recipes.small_gpt import SmallGPTRecipe
from openmaas.training.recipes.textcnn import TextCNNRecipe
from openmaas.training.recipes.token_classification import FinetuneTransformerNERRecipe
from openmaas.training.recipes.transformer_encoder import TransformerEncoderRecipe
from openmaas.training.recipes.word2vec import Word2VecRecipe

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        TextCNNRecipe(),
        BiLSTMRecipe(),
        GRURecipe(),
        TransformerEncoderRecipe(),
        FrozenEncoderRecipe(),
        FinetuneTransformerRecipe(),
        BiLSTMTaggerRecipe(),
        FinetuneTransformerNERRecipe(),
        Word2VecRecipe(),
        SmallGPTRecipe(),
        CNNRecipe(),
        ResNetRecipe(),
    )
}
