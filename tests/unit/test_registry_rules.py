"""The registry's rules: numbering, detection, immutability, metadata edits, compare, deletes
(aliases and references: test_registry_aliases.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.errors import (
    InvalidName,
    InvalidRequest,
    ModelNotFound,
    TaskNotDetected,
    UnsupportedSource,
)
from openmaas.registry.composition import Registry
from openmaas.registry.entities import Lineage
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from tests.factories import register, write_hf_model


def test_versions_are_numbered_from_one_without_gaps(registry: Registry, tmp_path: Path) -> None:
    assert [register(registry, tmp_path, seed=s) for s in range(3)] == [1, 2, 3]
    assert register(registry, tmp_path, name="other") == 1


def test_deleted_version_numbers_are_never_reused(registry: Registry, tmp_path: Path) -> None:
    register(registry, tmp_path, seed=1)
    register(registry, tmp_path, seed=2)
    registry.store.delete_version("clf", 2, caller=SYSTEM)
    assert register(registry, tmp_path, seed=3) == 3


def test_registration_detects_task_runtime_and_records_manifest(
    registry: Registry, tmp_path: Path
) -> None:
    model_dir = write_hf_model(tmp_path / "m")
    version = registry.registration.register_plan(
        "clf",
        plan_directory(model_dir),
        VersionSpec(
            description="first",
            tags={"team": "nlp"},
            params={"lr": 0.1},
            metrics={"acc": 0.9},
            lineage=Lineage(dataset_id="ds-1", job_id="job-1"),
            created_by="alice",
        ),
        caller=SYSTEM,
    )
    assert (version.task, version.runtime, version.format) == (
        "text-classification",
        "transformers",
        "safetensors",
    )
    assert {f.path for f in version.files} == {
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "vocab.txt",
    }
    assert all(len(f.sha256) == 64 and f.size > 0 for f in version.files)
    assert version.size_bytes == sum(f.size for f in version.files)
    assert version.lineage.source["type"] == "path"
    assert (version.lineage.dataset_id, version.lineage.job_id) == ("ds-1", "job-1")
    assert version.created_by == "alice"
    assert version.status == "ready"


@pytest.mark.parametrize(
    ("architecture", "model_type", "task"),
    [
        ("BertForTokenClassification", "bert", "token-classification"),
        ("GPT2LMHeadModel", "gpt2", "text-generation"),
        ("MarianMTModel", "marian", "translation"),
        ("BartForConditionalGeneration", "bart", "summarization"),
        ("WhisperForConditionalGeneration", "whisper", "speech-recognition"),
        ("ViTForImageClassification", "vit", "image-classification"),
        ("BertModel", "bert", "embedding"),
    ],
)
def test_task_is_detected_from_the_config(
    registry: Registry, tmp_path: Path, architecture: str, model_type: str, task: str
) -> None:
    model_dir = write_hf_model(tmp_path / "m", architecture=architecture, model_type=model_type)
    assert (
        registry.registration.register_plan(
            "m", plan_directory(model_dir), VersionSpec(), caller=SYSTEM
        ).task
        == task
    )


def test_one_output_classifier_is_a_cross_encoder(registry: Registry, tmp_path: Path) -> None:
    model_dir = write_hf_model(tmp_path / "m", extra_config={"id2label": {"0": "LABEL_0"}})
    assert (
        registry.registration.register_plan(
            "m", plan_directory(model_dir), VersionSpec(), caller=SYSTEM
        ).task
        == "rerank"
    )


def test_undetectable_task_asks_for_one(registry: Registry, tmp_path: Path) -> None:
    model_dir = write_hf_model(
        tmp_path / "m", architecture="T5ForConditionalGeneration", model_type="custom"
    )
    with pytest.raises(TaskNotDetected, match="--task"):
        registry.registration.register_plan(
            "m", plan_directory(model_dir), VersionSpec(), caller=SYSTEM
        )
    given = registry.registration.register_plan(
        "m", plan_directory(model_dir), VersionSpec(task="translation"), caller=SYSTEM
    )
    assert given.task == "translation"
    with pytest.raises(TaskNotDetected, match="unknown task"):
        registry.registration.register_plan(
            "m", plan_directory(model_dir), VersionSpec(task="poetry"), caller=SYSTEM
        )


def test_unknown_format_is_refused_with_what_was_expected(
    registry: Registry, tmp_path: Path
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedSource, match="config.json"):
        registry.registration.register_plan(
            "m", plan_directory(tmp_path / "m"), VersionSpec(), caller=SYSTEM
        )


def test_published_files_are_read_only_and_metadata_edits_are_recorded(
    registry: Registry, tmp_path: Path
) -> None:
    register(registry, tmp_path, description="old")
    _, root = registry.files.open_stored("clf:1", caller=SYSTEM)
    mode = (root / "config.json").stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    before = registry.get_version("clf", 1, caller=SYSTEM)
    after = registry.store.update_version(
        "clf", 1, description="new", tags={"stage": "qa"}, actor="bob", caller=SYSTEM
    )
    assert after.description == "new"
    assert after.tags == {"stage": "qa"}
    assert after.files == before.files
    registry.store.update_version("clf", 1, tags={"stage": None}, actor="bob", caller=SYSTEM)
    history = registry.store.metadata_history("clf", 1, caller=SYSTEM)
    assert [(h.before, h.after, h.actor) for h in history] == [
        (
            {"description": "old", "tags": {}},
            {"description": "new", "tags": {"stage": "qa"}},
            "bob",
        ),
        ({"tags": {"stage": "qa"}}, {"tags": {}}, "bob"),
    ]
    # An edit that changes nothing records nothing.
    registry.store.update_version("clf", 1, description="new", caller=SYSTEM)
    assert len(registry.store.metadata_history("clf", 1, caller=SYSTEM)) == 2


def test_invalid_names_tags_and_metrics_are_refused(registry: Registry, tmp_path: Path) -> None:
    model_dir = write_hf_model(tmp_path / "m")
    for bad in ("", "a/b/c", "/b", "a/", "a@b", "a:b", "../x", "-x"):
        with pytest.raises(InvalidName):
            registry.registration.register_plan(
                bad, plan_directory(model_dir), VersionSpec(), caller=SYSTEM
            )
    with pytest.raises(InvalidRequest, match="finite number"):
        registry.registration.register_plan(
            "m",
            plan_directory(model_dir),
            VersionSpec(metrics={"acc": float("nan")}),
            caller=SYSTEM,
        )
    with pytest.raises(InvalidName, match="reserved"):
        registry.registration.register_plan(
            "m", plan_directory(model_dir), VersionSpec(alias="latest"), caller=SYSTEM
        )
    with pytest.raises(ModelNotFound):
        registry.get_model("m", caller=SYSTEM)  # nothing was half-created by the refusals


def test_compare_reports_metric_param_file_and_lineage_differences(
    registry: Registry, tmp_path: Path
) -> None:
    a_dir = write_hf_model(tmp_path / "a", seed=1)
    b_dir = write_hf_model(tmp_path / "b", seed=2)
    (b_dir / "vocab.txt").unlink()
    (b_dir / "merges.txt").write_text("a b\n")
    registry.registration.register_plan(
        "clf",
        plan_directory(a_dir),
        VersionSpec(
            metrics={"acc": 0.80, "f1": 0.7},
            params={"lr": 0.1, "epochs": 3},
            lineage=Lineage(dataset_id="d1"),
        ),
        caller=SYSTEM,
    )
    registry.registration.register_plan(
        "clf",
        plan_directory(b_dir),
        VersionSpec(
            metrics={"acc": 0.85, "loss": 0.3},
            params={"lr": 0.05, "epochs": 3, "warmup": 10},
            lineage=Lineage(dataset_id="d2", parent_version=1, transform="fine-tune"),
        ),
        caller=SYSTEM,
    )
    diff = registry.store.compare("clf", 1, 2, caller=SYSTEM)
    assert diff.metrics["acc"]["delta"] == pytest.approx(0.05)
    assert diff.metrics["f1"] == {"a": 0.7, "b": None, "delta": None}
    assert diff.params == {"lr": {"a": 0.1, "b": 0.05}, "warmup": {"a": None, "b": 10}}
    assert diff.files_added == ("merges.txt",)
    assert diff.files_removed == ("vocab.txt",)
    assert diff.files_changed == ("model.safetensors",)
    assert diff.files_unchanged == 2
    assert diff.lineage["b"]["parent_version"] == 1
    assert diff.lineage["a"]["dataset_id"] == "d1"


def test_compare_reports_every_field_that_differs(registry: Registry, tmp_path: Path) -> None:
    # Same files, params and metrics: only what the versions say about themselves differs.
    model_dir = write_hf_model(tmp_path / "m", seed=1)
    for description, tags in (("first try", {}), ("second try", {"team": "search"})):
        spec = VersionSpec(description=description, tags=tags, created_by="alice")
        registry.registration.register_plan("m", plan_directory(model_dir), spec, caller=SYSTEM)
    diff = registry.store.compare("m", 1, 2, caller=SYSTEM)
    assert diff.fields == {
        "description": {"a": "first try", "b": "second try"},
        "tags": {"a": {}, "b": {"team": "search"}},
    }
    assert registry.store.compare("m", 1, 1, caller=SYSTEM).fields == {}


def test_delete_model_removes_versions_aliases_and_files(
    registry: Registry, tmp_path: Path
) -> None:
    register(registry, tmp_path, alias="production")
    _, root = registry.files.open_stored("clf", caller=SYSTEM)
    registry.store.delete_model("clf", caller=SYSTEM)
    assert not root.exists()
    with pytest.raises(ModelNotFound):
        registry.resolve("clf", caller=SYSTEM)
    assert register(registry, tmp_path) == 1  # a new model of the same name starts afresh
