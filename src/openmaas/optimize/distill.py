"""The `distill` method: a registered text classifier (the teacher, on any runtime that
serves text-classification) teaches a smaller student on the job's training file.

The teacher labels every text of the file through its serving runtime (its probabilities
over its labels, in batches); the student learns those probabilities softened at
`temperature` (`distill_training`), mixed with cross-entropy on the file's own labels when
`alpha` < 1 (with the default 1.0 the file's labels are not used). A seeded 10% of the file
is held out: each epoch reports the loss and the student's agreement with the teacher there,
and training stops early when that agreement has not improved for `patience` epochs,
keeping the best epoch's weights. The student's labels are the teacher's, in its order.

Students (`distill_students`): `textcnn`, `bilstm` and `transformer_encoder` are the
platform's networks as their recipes build them, over a vocabulary of the training texts,
served by `openmaas-nn`; `layers:<k>` keeps a transformers teacher's first k layers (and
its embeddings and head) and trains them, served by `transformers`.

Example::

    job = client.create_optimization_job("sst2-bert", "distill", training_file="file-…",
                                         settings={"student": "textcnn", "temperature": 2.0})
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from openmaas.errors import InvalidRequest, OptimizationFailed
from openmaas.optimize.methods import BuildContext, Built, Checker, Method, integer, number

if TYPE_CHECKING:
    from openmaas.optimize.distill_students import DistillData
    from openmaas.registry.files import OpenedVersion
    from openmaas.training.recipe import Example, TrainingContext

DISTILL = "distill"
NETWORK_STUDENTS = ("textcnn", "bilstm", "transformer_encoder")
LAYERS = re.compile(r"layers:([1-9][0-9]{0,2})")  # the teacher's first k layers
# Every runtime that serves text-classification: the teacher is only ever asked to classify.
TEACHERS = frozenset({"transformers", "onnx", "openmaas-nn", "linear-head", "rules"})
HELD_OUT_SHARE = 0.1  # of the training file, for agreement and early stopping
FEWEST_EXAMPLES = 10  # so the held-out share holds at least one text
TEACHER_BATCH = 64  # texts per call to the teacher
PROGRESS_REPORTS = 10  # events while the teacher labels a file, at most
MOST_COPIES = 50  # augmented copies per training text (Tang et al. draw 20)
# Teacher rows must sum to 1 within this (VADER's shares are rounded to 3 decimals each); a
# multi-label teacher's (a sigmoid per label) do not.
PROBABILITY_SUM_TOLERANCE = 1e-2

DEFAULTS: dict[str, Any] = {
    "student": "textcnn",
    "temperature": 2.0,  # Hinton et al. 2015 use 1-20; 2-4 is usual for classifiers
    "alpha": 1.0,  # weight of the soft-label loss; 1 - alpha goes to the file's labels
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": None,  # None: the student recipe's (textcnn 3e-3, bilstm 5e-3, ...)
    "patience": 3,  # epochs without better held-out agreement before stopping; 0: never
    "seed": 0,
    # Tang et al. 2019's transfer set (`distill_augment`): copies per text, masked words,
    # n-gram samples; all labelled by the teacher
    "augment": 0,
    "mask_probability": 0.1,
    "ngram_probability": 0.25,
    # A registered word-vector model the student's embedding layer starts from (as a
    # recipe's `embeddings`; Tang et al. start theirs from word2vec), trained on or frozen.
    "embeddings": None,
    "embeddings_mode": "non-static",
}


def build_distilled(context: BuildContext) -> Built:
    from openmaas.jobs.context import JobStopped
    from openmaas.optimize.distill_students import train_fewer_layers, train_network_student
    from openmaas.training.recipe import TrainingStopped

    settings = context.settings
    student = str(settings["student"])
    texts, file_labels = training_texts(context.read_examples("training"))
    learn, held_out = held_out_split(len(texts), int(settings["seed"]))
    extra = _augmented(context, [texts[i] for i in learn])
    everything = texts + extra
    context.message(f"The teacher labels {len(everything)} texts")
    labels, probabilities = teacher_probabilities(context, everything)
    hard = None
    if float(settings["alpha"]) < 1.0:
        # An augmented copy has no label of the file's: it takes the teacher's top label.
        hard = hard_labels(file_labels, labels) + [
            int(i) for i in probabilities[len(texts) :].argmax(axis=1)
        ]
    learn = learn + list(range(len(texts), len(everything)))
    data = distill_data(everything, probabilities, hard, labels, learn, held_out)
    context.message(
        f"Distilling into {settings['student']}: {len(data.train)} texts to learn from "
        f"({len(extra)} of them augmented copies), {len(data.held_out)} held out to measure "
        "agreement with the teacher"
    )
    ctx = training_context(context)
    try:
        if student in NETWORK_STUDENTS:
            trained = train_network_student(ctx, student, data, settings)
        else:  # layers:<k>, checked against the teacher when the job was created
            trained = train_fewer_layers(ctx, context, _layers(student), data, settings)
    except TrainingStopped as exc:
        raise JobStopped(str(exc)) from exc
    context.message(
        f"Student agrees with the teacher on {trained.metrics['teacher_agreement_heldout']:.1%} "
        f"of the held-out texts after {trained.metrics['distill_epochs']:.0f} epochs"
    )
    metrics = {
        **trained.metrics,
        "distill_training_texts": float(len(data.train)),
        "distill_augmented_texts": float(len(extra)),
    }
    return Built(trained.runtime, trained.params, metrics)


def training_texts(examples: Sequence[Example]) -> tuple[list[str], list[str | None]]:
    """The file's texts and their labels (None where a row has none)."""
    texts = [str(example.get("text", "")) for example in examples]
    if len(texts) < FEWEST_EXAMPLES:
        raise OptimizationFailed(
            f"distillation needs at least {FEWEST_EXAMPLES} examples in training_file "
            f"(it holds {len(texts)}): a tenth of them is held out to measure the student"
        )
    labels = [None if e.get("label") is None else str(e.get("label")) for e in examples]
    return texts, labels


def teacher_probabilities(
    context: BuildContext, texts: Sequence[str]
) -> tuple[tuple[str, ...], np.ndarray[Any, Any]]:
    """(the teacher's labels in its order, its probabilities for each text over them)."""
    from openmaas.optimize.measure import outputs

    teacher = context.parent_model
    labels = tuple(str(label) for label in getattr(teacher, "labels", ()))
    # Texts of similar length share a batch, so little of each is padding (SST-2's phrases
    # run from 1 to 50 words); the rows go back to the texts' order after.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows = []
    reported = 0
    for start in range(0, len(texts), TEACHER_BATCH):
        context.check_stop("while the teacher labels the training texts")
        batch = [texts[i] for i in order[start : start + TEACHER_BATCH]]
        rows.append(outputs(teacher, context.version.task, batch))
        done = min(len(texts), start + TEACHER_BATCH)
        if done < len(texts) and done * PROGRESS_REPORTS // len(texts) > reported:
            reported = done * PROGRESS_REPORTS // len(texts)
            context.message(f"The teacher labelled {done} of {len(texts)} texts")
    by_length = np.concatenate(rows)
    probabilities = np.empty_like(by_length)
    probabilities[order] = by_length
    if len(labels) < 2 or probabilities.shape != (len(texts), len(labels)):
        raise OptimizationFailed(
            f"the teacher {_reference(context)} answered {probabilities.shape[1]} scores for "
            f"{len(labels)} labels; distillation needs a classifier of at least 2 labels"
        )
    sums = probabilities.sum(axis=1)
    if not np.all(np.abs(sums - 1.0) <= PROBABILITY_SUM_TOLERANCE):
        raise OptimizationFailed(
            f"the teacher {_reference(context)}'s scores do not sum to 1 (a multi-label "
            "model, a sigmoid per label): distill takes single-label classifiers"
        )
    return labels, probabilities / sums[:, None]


def hard_labels(file_labels: Sequence[str | None], labels: Sequence[str]) -> list[int]:
    """The file's labels as indices into the teacher's (alpha < 1 mixes them in)."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(label) for label in file_labels if label not in index})
    if unknown:
        raise OptimizationFailed(
            f"with settings.alpha < 1 the file's labels train the student too, but "
            f"{', '.join(repr(label) for label in unknown[:5])} are not among the teacher's "
            f"labels ({', '.join(labels)}); relabel the file or leave alpha at 1"
        )
    return [index[str(label)] for label in file_labels]


def held_out_split(n_examples: int, seed: int) -> tuple[list[int], list[int]]:
    """(indices to learn from, held-out indices): a seeded tenth held out, at least one."""
    order = list(range(n_examples))
    random.Random(seed).shuffle(order)  # noqa: S311 - a data split, not a secret
    held = max(1, round(n_examples * HELD_OUT_SHARE))
    return sorted(order[held:]), sorted(order[:held])


def distill_data(
    texts: Sequence[str],
    probabilities: np.ndarray[Any, Any],
    hard: Sequence[int] | None,
    labels: tuple[str, ...],
    learn: Sequence[int],
    held_out: Sequence[int],
) -> DistillData:
    import torch

    from openmaas.optimize.distill_students import DistillData
    from openmaas.optimize.distill_training import SoftTargets

    def targets(indices: Sequence[int]) -> SoftTargets:
        return SoftTargets(
            texts=[texts[i] for i in indices],
            probabilities=torch.tensor(probabilities[list(indices)], dtype=torch.float32),
            hard_labels=(
                None if hard is None else torch.tensor([hard[i] for i in indices], dtype=torch.long)
            ),
        )

    return DistillData(labels=labels, train=targets(learn), held_out=targets(held_out))


def _augmented(context: BuildContext, texts: list[str]) -> list[str]:
    """Tang et al.'s transfer set over the texts the student learns from (none held out)."""
    from openmaas.optimize.distill_augment import augmented

    settings = context.settings
    copies = int(settings["augment"])
    if copies == 0:
        return []
    extra = augmented(
        texts,
        copies=copies,
        mask_probability=float(settings["mask_probability"]),
        ngram_probability=float(settings["ngram_probability"]),
        seed=int(settings["seed"]),
    )
    context.message(f"Augmented the {len(texts)} texts to learn from with {len(extra)} copies")
    return extra


def training_context(context: BuildContext) -> TrainingContext:
    """The recipes' context over the job's: events, metrics, progress and stop requests go
    to the optimization job; checkpoints stay in its scratch folder (a restarted job
    distills again from the start)."""
    from openmaas.training.recipe import TrainingContext

    job = context.job
    vectors = context.embeddings
    return TrainingContext(
        job_id=job.job.id,
        task=context.version.task,
        train=(),
        validation=(),
        test=(),
        hyperparameters=dict(context.settings),
        seed=int(context.settings["seed"]),
        output_dir=context.output_dir,
        work_dir=context.work_dir / "student",
        device=job.device,
        on_message=lambda level, text: job.message(text, level),
        on_metrics=job.report_metrics,
        should_stop=job.should_stop,
        on_plan=job.plan_steps,
        embeddings=vectors.directory if vectors is not None else None,
        embeddings_reference=(
            f"{vectors.version.model}:{vectors.version.version}" if vectors else None
        ),
    )


def check_student(settings: dict[str, Any], parent: OpenedVersion) -> None:
    """A `layers:<k>` student keeps fewer than all layers of a transformers teacher."""
    student = str(settings["student"])
    if student in NETWORK_STUDENTS:
        return
    version = parent.version
    reference = f"{version.model}:{version.version}"
    if version.runtime != "transformers":
        raise InvalidRequest(
            f"settings.student={student} keeps layers of a transformers teacher; {reference} "
            f"is served by {version.runtime} (distill it into {', '.join(NETWORK_STUDENTS)})",
            param="settings.student",
        )
    from openmaas.optimize.checkpoints import checkpoint_directory

    try:
        config = json.loads((checkpoint_directory(parent) / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        config = {}
    count = config.get("num_hidden_layers") if isinstance(config, dict) else None
    if not isinstance(count, int) or not _layers(student) < count:
        raise InvalidRequest(
            f"settings.student={student} must keep fewer layers than the {count} of "
            f"{reference}'s config (num_hidden_layers)",
            param="settings.student",
        )


def _layers(student: str) -> int:
    match = LAYERS.fullmatch(student)
    assert match is not None  # checked when the job was created
    return int(match.group(1))


def _reference(context: BuildContext) -> str:
    return f"{context.version.model}:{context.version.version}"


# -- settings ---------------------------------------------------------------------------------


def _student(settings: dict[str, Any]) -> None:
    value = settings.get("student")
    if not isinstance(value, str) or not (value in NETWORK_STUDENTS or LAYERS.fullmatch(value)):
        raise InvalidRequest(
            f"settings.student must be one of {', '.join(NETWORK_STUDENTS)} or layers:<k> "
            f"(the first k layers of a transformers teacher), got {value!r}",
            param="settings.student",
        )


def _embeddings(settings: dict[str, Any]) -> None:
    """`embeddings`: a model reference (a network student's), pinned when the job is made."""
    value = settings.get("embeddings")
    if value is not None:
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequest(
                "settings.embeddings names a registered word-vector model (a word2vec "
                f"recipe's output or imported vectors), got {value!r}",
                param="settings.embeddings",
            )
        if settings.get("student") not in NETWORK_STUDENTS:
            raise InvalidRequest(
                f"settings.embeddings starts a {', '.join(NETWORK_STUDENTS)} student's word "
                f"embeddings; student {settings.get('student')!r} keeps the teacher's",
                param="settings.embeddings",
            )
    mode = settings.get("embeddings_mode")
    if mode not in ("static", "non-static"):
        raise InvalidRequest(
            f"settings.embeddings_mode must be static (frozen) or non-static, got {mode!r}",
            param="settings.embeddings_mode",
        )


def _optional_learning_rate(settings: dict[str, Any]) -> None:
    if settings.get("learning_rate") is not None:
        number("learning_rate", 0, 1, low_open=True)(settings)


CHECKS: tuple[Checker, ...] = (
    _student,
    _embeddings,
    number("temperature", 0, 100, low_open=True),
    number("alpha", 0, 1),
    integer("epochs", 1, 1000),
    integer("batch_size", 1, 4096),
    _optional_learning_rate,
    integer("patience", 0, 1000),
    integer("seed", 0, 2**31 - 1),
    integer("augment", 0, MOST_COPIES),
    number("mask_probability", 0, 1),
    number("ngram_probability", 0, 1),
)

METHODS = (
    Method(
        name=DISTILL,
        summary=(
            "train a smaller student (textcnn, bilstm, transformer_encoder, or the teacher's "
            "first k layers) on the classifier's soft labels over training_file"
        ),
        defaults=DEFAULTS,
        runtimes=TEACHERS,
        tasks=frozenset({"text-classification"}),
        suffix="distilled",
        build=build_distilled,
        checks=CHECKS,
        needs_training_file=True,
        check_parent=check_student,
    ),
)
