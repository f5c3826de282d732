"""Task contracts: the catalogue, the protocols runtimes implement, and the layering rules
(`tasks/` builds on core only; runtimes never import the registry)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

from openmaas.errors import InvalidRequest, WrongTask
from openmaas.runtimes import base
from openmaas.runtimes.base import LoadedModel, ModelSource, register_runtime
from openmaas.tasks.catalogue import (
    get_task,
    implements,
    protocol_methods,
    registered_tasks,
    task_of_method,
)
from openmaas.tasks.embedding import EMBEDDING, EmbeddingParams
from openmaas.tasks.explanation import EXPLANATION
from openmaas.tasks.image_explanation import IMAGE_EXPLANATION
from openmaas.tasks.names import Task
from openmaas.tasks.tensors import ModelFacts
from openmaas.tasks.text_classification import TEXT_CLASSIFICATION, LabelScore

SRC = Path(__file__).resolve().parents[2] / "src" / "openmaas"
CORE = ("openmaas.errors", "openmaas.settings", "openmaas.tasks")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_tasks_import_only_core() -> None:
    allowed_outside = {"numpy", "numpy.typing"}
    for path in sorted((SRC / "tasks").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "openmaas":
                assert name.startswith(CORE), f"{path.name} imports {name}"
            else:
                assert top in sys.stdlib_module_names or name in allowed_outside, (
                    f"{path.name} imports {name}"
                )


def test_runtimes_import_no_registry_serving_or_api() -> None:
    for path in sorted((SRC / "runtimes").glob("*.py")):
        for name in _imports(path):
            assert not name.startswith(("openmaas.registry", "openmaas.serving", "openmaas.api")), (
                f"runtimes/{path.name} imports {name}"
            )


def test_serving_modules_stay_under_600_lines() -> None:
    for package in ("tasks", "runtimes", "serving", "api"):
        for path in (SRC / package).rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            assert lines <= 600, f"{path} has {lines} lines"


def test_no_module_is_over_600_lines() -> None:
    for path in SRC.rglob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 600, f"{path.relative_to(SRC)} has {lines} lines"


API_PROTOCOLS = ("openai", "v2", "tasks", "admin", "ops")


def test_api_protocol_packages_import_no_other_protocol_package() -> None:
    # What two protocols share (the auditor, the training-job steps) lives in `api/` itself,
    # so each package can move or go without touching the others; only app.py sees them all.
    for protocol in API_PROTOCOLS:
        package = SRC / "api" / protocol
        assert (package / "__init__.py").is_file(), package
        others = tuple(f"openmaas.api.{p}" for p in API_PROTOCOLS if p != protocol)
        for path in sorted(package.rglob("*.py")):
            for name in _imports(path):
                assert not name.startswith(others), f"api/{protocol}/{path.name} imports {name}"


def test_the_built_in_tasks_are_registered_under_their_names() -> None:
    names = {contract.name for contract in registered_tasks()}
    # Explanations are served over the classifiers' and taggers' versions: no version's task.
    assert names - {EXPLANATION.name, IMAGE_EXPLANATION.name} == {t.value for t in Task}
    assert EXPLANATION.name in names
    assert get_task("embedding") is EMBEDDING
    with pytest.raises(InvalidRequest, match="no task 'painting'"):
        get_task("painting")


def test_protocol_methods_name_their_task() -> None:
    assert protocol_methods(EMBEDDING) == ["embed", "detokenize"]
    assert task_of_method("classify") == "text-classification"
    assert task_of_method("encode_chat") == "text-generation"
    assert task_of_method("count_tokens") is None  # every model has it


class _Labeller(LoadedModel):
    def __init__(self) -> None:
        self.source = ModelSource.for_directory(Path("."), task="text-classification", runtime="x")
        self.tasks = frozenset({"text-classification"})
        self.memory_bytes = 1
        self.labels = ("a", "b")

    def classify(self, texts: list[str]) -> list[list[LabelScore]]:
        return [[LabelScore("a", 0.9), LabelScore("b", 0.1)] for _ in texts]


def test_a_model_serves_a_task_by_implementing_its_protocol() -> None:
    model = _Labeller()
    assert implements(model, TEXT_CLASSIFICATION)
    assert not implements(model, EMBEDDING)
    with pytest.raises(WrongTask, match="serves text-classification, not embedding"):
        model.embed(["x"])  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        model.no_such_thing  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(WrongTask):
        EMBEDDING.check_model(model, "m:1")


def test_embedding_dimensions_are_checked_against_the_model() -> None:
    class Fixed:
        tasks = frozenset({"embedding"})
        max_input_tokens = None
        embedding_dimensions = 4
        truncatable_dimensions = False

        def detokenize(self, ids: list[int]) -> str:
            return ""

        def embed(self, texts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
            return np.ones((len(texts), 4), dtype=np.float32)

    with pytest.raises(InvalidRequest, match="cannot shorten them") as refused:
        EMBEDDING.plan(Fixed(), ["x"], EmbeddingParams(dimensions=2), label="m:1", truncate=False)  # type: ignore[arg-type]
    assert refused.value.param == "dimensions"


def test_classification_scores_follow_the_models_label_order() -> None:
    ranking = [LabelScore("b", 0.7), LabelScore("a", 0.3)]
    outputs = TEXT_CLASSIFICATION.v2_encode([ranking], ModelFacts(None, {"labels": ["a", "b"]}))
    assert list(outputs["LABEL"]) == ["b"]
    np.testing.assert_allclose(outputs["SCORES"], [[0.3, 0.7]])


def test_register_runtime_takes_module_and_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "RUNTIMES", dict(base.RUNTIMES))
    register_runtime("mine", "tests.reverse_task:ReverseRuntime")
    assert base.get_runtime("mine").name == "reverse"
    with pytest.raises(ValueError, match="package.module:Class"):
        register_runtime("broken", "tests.reverse_task")
