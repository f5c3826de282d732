"""The `distill` method's parts: the softened targets and the loss on cases worked by hand,
its settings (a 400 naming the wrong one), the held-out split, the file's labels mapped to
the teacher's, and students trained on a teacher's probabilities (a `textcnn` that learns
them, deterministically for a seed; `bilstm` and `transformer_encoder` that save what
`openmaas-nn` serves)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from openmaas.errors import InvalidRequest, OptimizationFailed
from openmaas.nn.saved import load_classifier
from openmaas.optimize.distill import (
    DEFAULTS,
    METHODS,
    distill_data,
    hard_labels,
    held_out_split,
)
from openmaas.optimize.distill_students import train_network_student
from openmaas.optimize.distill_training import combined_loss, distillation_loss, soften
from openmaas.training.recipe import TrainingContext
from tests.sentiment_data import POSITIVE, reviews

METHOD = METHODS[0]


def test_softening_takes_the_t_th_root_and_renormalises() -> None:
    # sqrt(0.8) : sqrt(0.2) = 2 : 1
    softened = soften(torch.tensor([[0.8, 0.2], [0.5, 0.5]]), temperature=2.0)
    torch.testing.assert_close(softened, torch.tensor([[2 / 3, 1 / 3], [0.5, 0.5]]))
    # T = 1 leaves the probabilities as they are; a 0 stays (almost) 0 without a NaN.
    same = soften(torch.tensor([[0.7, 0.3, 0.0]]), temperature=1.0)
    torch.testing.assert_close(same, torch.tensor([[0.7, 0.3, 0.0]]))


def test_the_loss_is_kl_at_temperature_times_t_squared() -> None:
    # Student logits (0, 2 ln 3) at T = 2 are (0, ln 3): probabilities (1/4, 3/4). Against a
    # teacher at (1/2, 1/2): KL = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3); times T² = 2 ln(4/3).
    logits = torch.tensor([[0.0, 2 * math.log(3)]])
    targets = torch.tensor([[0.5, 0.5]])
    loss = distillation_loss(logits, targets, temperature=2.0)
    assert float(loss) == pytest.approx(2 * math.log(4 / 3))
    # A student that already says what the teacher says at T has nothing left to learn.
    teacher = torch.tensor([[0.9, 0.1], [0.25, 0.75]])
    assert float(distillation_loss(teacher.log() * 3.0, teacher, 3.0)) == pytest.approx(0, abs=1e-6)


def test_alpha_mixes_in_cross_entropy_on_the_files_labels() -> None:
    logits = torch.tensor([[0.0, 2 * math.log(3)]])  # at T = 1: (0.1, 0.9)
    targets = torch.tensor([[0.5, 0.5]])
    labels = torch.tensor([1])
    mixed = combined_loss(logits, targets, labels, temperature=2.0, alpha=0.25)
    expected = 0.25 * 2 * math.log(4 / 3) + 0.75 * -math.log(0.9)
    assert float(mixed) == pytest.approx(expected)
    soft_only = combined_loss(logits, targets, labels, temperature=2.0, alpha=1.0)
    assert float(soft_only) == pytest.approx(2 * math.log(4 / 3))


def test_settings_are_checked_with_the_setting_named() -> None:
    assert METHOD.check({}) == {**DEFAULTS, "temperature": 2.0, "alpha": 1.0}
    assert METHOD.check({"student": "layers:2", "learning_rate": 0.01})["student"] == "layers:2"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"student": "gpt"}, "student"),
        ({"student": "layers:0"}, "student"),
        ({"temperature": 0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"seed": "one"}, "seed"),
        ({"teacher": "x"}, "teacher"),
    ]
    for given, name in bad:
        with pytest.raises(InvalidRequest) as caught:
            METHOD.check(given)
        assert caught.value.param == f"settings.{name}", given


def test_a_seeded_tenth_is_held_out() -> None:
    train, held = held_out_split(95, seed=7)
    assert len(held) == 10
    assert sorted(train + held) == list(range(95))
    assert held_out_split(95, seed=7) == (train, held)
    assert held_out_split(95, seed=8)[1] != held
    assert len(held_out_split(10, seed=0)[1]) == 1


def test_the_files_labels_must_be_the_teachers_to_be_mixed_in() -> None:
    assert hard_labels(["pos", "neg", "pos"], ("neg", "pos")) == [1, 0, 1]
    with pytest.raises(OptimizationFailed, match="'1' are not among the teacher's labels"):
        hard_labels(["1", "neg"], ("neg", "pos"))


def context(tmp_path: Path, seed: int) -> TrainingContext:
    return TrainingContext(
        job_id="optjob-test",
        task="text-classification",
        train=(),
        validation=(),
        test=(),
        hyperparameters={},
        seed=seed,
        output_dir=tmp_path / "output",
        work_dir=tmp_path / "work",
    )


def teacher_probabilities(texts: list[str]) -> np.ndarray[Any, Any]:
    """A made-up teacher: confident where a sentence's last opinion word is positive."""
    rows = []
    for text in texts:
        last_opinion = text.rsplit(" but ", 1)[-1].split()
        positive = 0.9 if any(word in POSITIVE for word in last_opinion) else 0.1
        rows.append([1 - positive, positive])
    return np.asarray(rows)


def test_a_textcnn_student_learns_the_teachers_probabilities_deterministically(
    tmp_path: Path,
) -> None:
    texts = [example["text"] for example in reviews(300, seed=1)]
    probabilities = teacher_probabilities(texts)
    settings = {**DEFAULTS, "epochs": 8, "batch_size": 16}
    data = distill_data(
        texts, probabilities, None, ("negative", "positive"), *held_out_split(len(texts), seed=0)
    )

    first = train_network_student(context(tmp_path / "a", seed=0), "textcnn", data, settings)
    again = train_network_student(context(tmp_path / "b", seed=0), "textcnn", data, settings)

    assert first.runtime == "openmaas-nn"
    assert first.params == {
        "labels": ["negative", "positive"],
        "architecture": "textcnn",
        "recipe": "textcnn",
    }
    # 30 held-out sentences; measured 28 of 30 (0.933) with seed 0.
    assert first.metrics["teacher_agreement_heldout"] >= 0.9
    assert 1 <= first.metrics["distill_epochs"] <= 8
    saved = load_classifier(tmp_path / "a" / "output")
    assert saved.labels == ("negative", "positive")
    same = load_classifier(tmp_path / "b" / "output")
    for name, tensor in saved.network.state_dict().items():
        assert torch.equal(tensor, same.network.state_dict()[name]), name
    assert again.metrics == first.metrics


@pytest.mark.parametrize(
    ("student", "architecture"), [("bilstm", "rnn"), ("transformer_encoder", "transformer-encoder")]
)
def test_the_other_network_students_save_what_openmaas_nn_serves(
    tmp_path: Path, student: str, architecture: str
) -> None:
    texts = [example["text"] for example in reviews(60, seed=1)]
    data = distill_data(
        texts, teacher_probabilities(texts), None, ("neg", "pos"), *held_out_split(60, seed=0)
    )
    trained = train_network_student(
        context(tmp_path, seed=0), student, data, {**DEFAULTS, "epochs": 1}
    )
    assert trained.params["architecture"] == architecture
    assert trained.metrics["distill_epochs"] == 1
    saved = load_classifier(tmp_path / "output")
    assert (saved.labels, saved.spec["architecture"]) == (("neg", "pos"), architecture)
