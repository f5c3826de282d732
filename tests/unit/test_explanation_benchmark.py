"""The explanation faithfulness benchmark run end to end on a TextCNN fitted here in a second:
the deletion curves per method and random, their areas, and the section it writes."""

from __future__ import annotations

from pathlib import Path

from benchmarks import explanation_faithfulness as bench
from benchmarks.markdown_sections import replace_section

from openmaas.nn.textcnn import TextCNN, TextCNNConfig
from tests.integration.test_optimization_networks import trained_classifier

DEV = [
    {"text": "a wonderful , moving film with great acting and a clever story", "label": "positive"},
    {"text": "a dull , joyless mess and a tedious waste of time , badly shot", "label": "negative"},
    {"text": "too short", "label": "negative"},  # five words or fewer: not measured
]


def test_the_curves_and_the_section(tmp_path: Path) -> None:
    directory = trained_classifier(
        tmp_path / "cnn",
        "textcnn",
        lambda vocabulary: TextCNN(
            TextCNNConfig(vocab_size=vocabulary, n_labels=2, embedding_dim=16, n_filters=8)
        ),
    )
    curves = bench.measure("TextCNN", bench.load(directory, "openmaas-nn"), DEV)
    assert curves.sentences == 2
    assert set(curves.drops) == {"integrated-gradients", "occlusion", "random"}
    assert all(len(drops) == len(bench.KS) for drops in curves.drops.values())
    assert len(curves.deltas) == 2
    random_area = sum(curves.drops["occlusion"]) - sum(curves.drops["random"])
    assert abs(curves.area("occlusion") - random_area) < 1e-9
    section = bench.render_section(
        [curves], bench.Plan.quick(), "python benchmarks/x.py", ["MiniLM (transformers)"]
    )
    assert section.startswith(bench.SECTION_HEADING)
    assert section.count("| TextCNN |") == 3
    document = replace_section("# Benchmarks\n\n## Other\n\nkept\n", section)
    assert "kept" in document
    assert bench.SECTION_HEADING in document
