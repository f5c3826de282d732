"""The tensor surgery of `truncate_layers` and `prune` on tiny BERTs: what each keeps computes
what the parent computed, the saved checkpoints reload with plain `from_pretrained` and give
the same outputs, and unstructured pruning reaches its sparsity target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from openmaas.optimize.checkpoints import (
    encoder_layers,
    keep_first_layers,
    restore_stored_dtype,
)
from openmaas.optimize.prune import (
    linear_weights,
    make_permanent,
    prune_ffn_channels,
    prune_unstructured,
)
from tests.runtimes.tiny_models import build_bert

TEXTS = ["what a delight", "a dreary, joyless mess of a film", "ok"]
ROOT = Path(__file__).resolve().parents[2]


def inputs(directory: Path) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


def test_the_first_layers_kept_compute_the_parents_hidden_states(tmp_path: Path) -> None:
    parent_dir = build_bert(tmp_path / "parent", layers=4)
    batch = inputs(parent_dir)
    network = AutoModel.from_pretrained(parent_dir).eval()
    with torch.no_grad():
        expected = network(**batch, output_hidden_states=True).hidden_states[2]

    keep_first_layers(network, 2)
    network.save_pretrained(tmp_path / "child")
    reloaded = AutoModel.from_pretrained(tmp_path / "child").eval()

    assert reloaded.config.num_hidden_layers == 2
    assert len(encoder_layers(reloaded)[1]) == 2
    with torch.no_grad():
        torch.testing.assert_close(network(**batch).last_hidden_state, expected)
        torch.testing.assert_close(reloaded(**batch).last_hidden_state, expected)


def test_structured_pruning_removes_the_least_important_channels_and_reloads(
    tmp_path: Path,
) -> None:
    parent_dir = build_bert(
        tmp_path / "parent", head="sequence-classification", labels=("no", "yes"), layers=3
    )
    batch = inputs(parent_dir)
    network = AutoModelForSequenceClassification.from_pretrained(parent_dir).eval()
    # Half the channels of every layer contribute nothing (their output weights are zero):
    # those are the ones to remove, and without them the outputs must not change.
    width = network.config.intermediate_size
    generator = torch.Generator().manual_seed(0)
    for layer in encoder_layers(network)[1]:
        dead = torch.randperm(width, generator=generator)[: width // 2]
        with torch.no_grad():
            layer.get_submodule("output.dense").weight[:, dead] = 0.0
    with torch.no_grad():
        expected = network(**batch).logits

    assert prune_ffn_channels(network, 0.5) == (width, width // 2)
    network.save_pretrained(tmp_path / "child")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "child").eval()

    assert reloaded.config.intermediate_size == width // 2
    for layer in encoder_layers(reloaded)[1]:
        assert layer.get_submodule("intermediate.dense").weight.shape == (width // 2, 32)
        assert layer.get_submodule("output.dense").weight.shape == (32, width // 2)
    with torch.no_grad():
        torch.testing.assert_close(network(**batch).logits, expected)
        torch.testing.assert_close(reloaded(**batch).logits, expected)
    parent = AutoModelForSequenceClassification.from_pretrained(parent_dir)
    removed = 3 * (width // 2) * (32 + 1 + 32)  # per layer: rows, their biases, columns
    assert (
        sum(p.numel() for p in parent.parameters()) - sum(p.numel() for p in reloaded.parameters())
        == removed
    )


@pytest.mark.parametrize(("scope", "sparsity"), [("global", 0.5), ("layer", 0.3)])
def test_unstructured_pruning_reaches_its_target_and_reloads(
    tmp_path: Path, scope: str, sparsity: float
) -> None:
    parent_dir = build_bert(tmp_path / "parent", layers=2)
    network = AutoModel.from_pretrained(parent_dir).eval()
    shapes = {id(m): m.weight.shape for m, _ in linear_weights(network)}

    achieved = make_permanent(prune_unstructured(network, sparsity, scope))

    assert achieved == pytest.approx(sparsity, abs=1e-3)
    weights = linear_weights(network)
    assert {id(m): m.weight.shape for m, _ in weights} == shapes  # dense, same shapes
    if scope == "layer":
        for module, _ in weights:
            zeros = float((module.weight == 0).float().mean())
            assert zeros == pytest.approx(sparsity, abs=1 / module.weight.shape[1])
    network.save_pretrained(tmp_path / "child")
    reloaded = AutoModel.from_pretrained(tmp_path / "child").eval()
    zeros = sum(int((m.weight == 0).sum()) for m, _ in linear_weights(reloaded))
    total = sum(m.weight.numel() for m, _ in linear_weights(reloaded))
    assert zeros / total == pytest.approx(achieved)
    batch = inputs(parent_dir)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(**batch).last_hidden_state, network(**batch).last_hidden_state
        )


def test_a_half_precision_parent_is_saved_back_in_half_precision(tmp_path: Path) -> None:
    parent_dir = build_bert(tmp_path / "parent", layers=2)
    AutoModel.from_pretrained(parent_dir).half().save_pretrained(parent_dir)
    network = AutoModel.from_pretrained(parent_dir, dtype=torch.float32)
    keep_first_layers(network, 1)

    restore_stored_dtype(network, parent_dir)
    network.save_pretrained(tmp_path / "child")

    reloaded = AutoModel.from_pretrained(tmp_path / "child", dtype="auto")
    assert reloaded.dtype == torch.float16
    full_dir = build_bert(tmp_path / "full", layers=2)
    full = AutoModel.from_pretrained(full_dir)
    restore_stored_dtype(full, full_dir)
    assert full.dtype == torch.float32  # a float32 parent stays float32


def test_listing_the_methods_loads_neither_torch_nor_transformers() -> None:
    """The API process lists the methods; the heavy imports happen in a worker's build."""
    code = (
        "import sys; import openmaas.optimize.registry as r; "
        "assert {'prune', 'truncate_layers'} <= set(r.METHODS); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src")},
        timeout=120,
    )
    assert ran.stdout.strip() == "[]"


def test_pruning_the_filters_a_textcnn_head_ignores_leaves_its_logits() -> None:
    import torch

    from openmaas.nn.textcnn import TextCNN, TextCNNConfig
    from openmaas.optimize.prune_filters import prune_filters

    torch.manual_seed(0)
    network = TextCNN(TextCNNConfig(vocab_size=50, n_labels=3, embedding_dim=8, n_filters=6))
    network.eval()
    with torch.no_grad():  # the head reads only filters 0, 2 and 5 of every width
        for block in range(3):
            for ignored in (1, 3, 4):
                network.head.weight[:, block * 6 + ignored] = 0.0
    ids = torch.randint(1, 50, (4, 9))
    lengths = torch.tensor([9, 7, 5, 6])
    with torch.no_grad():
        expected = network(ids, lengths)
        assert prune_filters(network, 0.5) == (6, 3)
        got = network(ids, lengths)
    assert network.config.n_filters == 3
    assert all(conv.out_channels == 3 for conv in network.convolutions)
    assert network.head.in_features == 9
    torch.testing.assert_close(got, expected)
