"""Attention-head pruning on tiny BERT-family networks: the pruned network computes what the
full one computes with the removed heads gated to zero, its checkpoint stores smaller tensors
and loads (only) through `transformers_heads`, keeping every head changes nothing, and the
head choice keeps at least one head per layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    RobertaConfig,
    RobertaModel,
)

from openmaas.optimize.checkpoints import keep_first_layers
from openmaas.optimize.prune_heads import (
    choose_heads,
    current_heads,
    prune_heads,
    weight_importance,
)
from openmaas.runtimes import transformers_heads
from openmaas.runtimes.kept_heads import KEPT_HEADS, kept_heads_of
from openmaas.runtimes.transformers_memory import declared_bytes
from tests.runtimes.tiny_models import build_bert

TEXTS = ["what a delight", "a dreary, joyless mess of a film", "ok"]
KEEP = [[0, 2], [1, 2, 3], [3]]  # of the tiny BERT's 4 heads, in each of 3 layers
HEAD_WIDTH = 8  # the tiny BERT's 32 / 4


def inputs(directory: Path) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


def gated_logits(
    directory: Path, keep: list[list[int]], batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The full classifier with every head outside `keep` multiplied by zero."""
    network = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    prune_heads(network, [range(4)] * len(keep))  # our attention, every head kept
    for block, heads in zip(transformers_heads.attention_blocks(network), keep, strict=True):
        gate = torch.zeros(4)
        gate[heads] = 1.0
        block.get_submodule("self").gate = gate
    with torch.no_grad():
        return network(**batch).logits


@pytest.fixture
def classifier_dir(tmp_path: Path) -> Path:
    return build_bert(
        tmp_path / "parent", head="sequence-classification", labels=("a", "b"), seed=1, layers=3
    )


def test_a_pruned_classifier_computes_the_full_one_with_those_heads_gated_off(
    classifier_dir: Path, tmp_path: Path
) -> None:
    batch = inputs(classifier_dir)
    network = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    prune_heads(network, KEEP)
    assert network.config.to_dict()[KEPT_HEADS] == KEEP
    with torch.no_grad():
        pruned = network(**batch).logits
    torch.testing.assert_close(pruned, gated_logits(classifier_dir, KEEP, batch))

    network.save_pretrained(tmp_path / "child")
    with safe_open(tmp_path / "child" / "model.safetensors", "pt") as saved:
        for layer, heads in enumerate(KEEP):
            prefix = f"bert.encoder.layer.{layer}.attention"
            width = len(heads) * HEAD_WIDTH
            for name in ("query", "key", "value"):
                assert saved.get_slice(f"{prefix}.self.{name}.weight").get_shape() == [width, 32]
            assert saved.get_slice(f"{prefix}.output.dense.weight").get_shape() == [32, width]
    assert kept_heads_of(tmp_path / "child") == KEEP

    reloaded = transformers_heads.from_pretrained(
        AutoModelForSequenceClassification, tmp_path / "child"
    ).eval()
    assert type(reloaded).__name__ == "BertForSequenceClassification"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, pruned)
    # Why the runtime needs its own loading: the config's shapes are not the tensors'.
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "child")

    # Pruned again: the record keeps naming the parent's heads.
    prune_heads(reloaded, [[1], [0, 2], [0]])
    assert reloaded.config.to_dict()[KEPT_HEADS] == [[2], [1, 3], [3]]
    with torch.no_grad():
        again = reloaded(**batch).logits
    torch.testing.assert_close(again, gated_logits(classifier_dir, [[2], [1, 3], [3]], batch))


def test_keeping_every_head_changes_no_output_of_a_roberta(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    network = RobertaModel(config).eval()
    ids = torch.randint(5, 100, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with torch.no_grad():
        before = network(input_ids=ids, attention_mask=mask).last_hidden_state
        prune_heads(network, [[0, 1, 2, 3], [0, 1, 2, 3]])
        after = network(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(after, before)
    prune_heads(network, [[1, 3], [0]])
    network.save_pretrained(tmp_path / "roberta")
    reloaded = transformers_heads.from_pretrained(AutoModel, tmp_path / "roberta").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=ids, attention_mask=mask).last_hidden_state,
            network(input_ids=ids, attention_mask=mask).last_hidden_state,
        )


def test_an_eager_head_pruned_encoder_matches_its_sdpa_twin(tmp_path: Path) -> None:
    """ONNX export loads with eager attention; serving with SDPA."""
    directory = build_bert(tmp_path / "encoder", layers=3, seed=4)
    network = AutoModel.from_pretrained(directory).eval()
    prune_heads(network, KEEP)
    network.save_pretrained(tmp_path / "child")
    batch = inputs(directory)
    outputs = []
    for attention in ("eager", "sdpa"):
        loaded = transformers_heads.from_pretrained(
            AutoModel, tmp_path / "child", attn_implementation=attention
        ).eval()
        assert loaded.config._attn_implementation == attention
        with torch.no_grad():
            outputs.append(loaded(**batch).last_hidden_state)
    torch.testing.assert_close(outputs[0], outputs[1])


def test_the_memory_estimate_and_truncation_know_the_kept_heads(
    classifier_dir: Path, tmp_path: Path
) -> None:
    network = AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    prune_heads(network, KEEP)
    keep_first_layers(network, 2)
    assert network.config.to_dict()[KEPT_HEADS] == KEEP[:2]
    network.save_pretrained(tmp_path / "child")
    reloaded = transformers_heads.from_pretrained(
        AutoModelForSequenceClassification, tmp_path / "child"
    )
    assert [len(heads) for heads in current_heads(reloaded)] == [2, 3]
    parameters = sum(p.numel() for p in reloaded.parameters())
    buffers = sum(b.numel() for b in reloaded.buffers())
    estimate = declared_bytes(tmp_path / "child", AutoModelForSequenceClassification)
    assert estimate == (parameters + buffers) * 4


def test_heads_are_chosen_over_all_layers_keeping_one_in_each() -> None:
    importance = [torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0.1, 0.05, 0.2, 0.01])]
    assert choose_heads(importance, 0.5, "global", None) == [[0, 1, 2], [2]]
    assert choose_heads(importance, 0.5, "layer", None) == [[0, 1], [0, 2]]
    assert choose_heads(importance, 0.9, "global", None) == [[0], [2]]
    assert choose_heads(importance, 0.0, "global", 1) == [[0], [2]]


def test_the_weight_proxy_ranks_a_silenced_head_last(classifier_dir: Path) -> None:
    network = AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    with torch.no_grad():  # head 2 of layer 1 writes nothing: its value rows are zero
        network.bert.encoder.layer[1].attention.self.value.weight[16:24] = 0
    importance = weight_importance(network)
    assert [len(row) for row in importance] == [4, 4, 4]
    assert int(importance[1].argmin()) == 2
    assert json.dumps(choose_heads(importance, 0.25, "layer", None)[1]) == "[0, 1, 3]"


def test_a_head_pruned_version_is_a_base_the_fine_tuning_recipes_load(
    classifier_dir: Path, tmp_path: Path
) -> None:
    """Training on top of a pruned version: the recipes' loaders take its layout and keep
    its heads (the new head and labels are the recipe's)."""
    from openmaas.training.recipes.sequence_classification import load_sequence_classifier
    from openmaas.training.recipes.token_classification import load_token_classifier

    encoder = AutoModel.from_pretrained(classifier_dir).eval()  # its encoder, without a head
    prune_heads(encoder, KEEP)
    encoder.save_pretrained(tmp_path / "pruned")
    AutoTokenizer.from_pretrained(classifier_dir).save_pretrained(tmp_path / "pruned")

    classifier, _ = load_sequence_classifier(tmp_path / "pruned", ("x", "y", "z"), dropout=0.1)
    tagger, _ = load_token_classifier(tmp_path / "pruned", ("O", "B-PER", "I-PER"), dropout=0.1)
    for trained in (classifier, tagger):
        assert trained.config.to_dict()[KEPT_HEADS] == KEEP
        widths = [
            block.get_submodule("self").query.out_features
            for block in transformers_heads.attention_blocks(trained)
        ]
        assert widths == [len(heads) * HEAD_WIDTH for heads in KEEP]
    with torch.no_grad():
        assert classifier(**inputs(tmp_path / "pruned")).logits.shape == (len(TEXTS), 3)
