"""The task-generic engine: every entry point takes the caller explicitly and refuses a
missing one; one path serves any registered task contract (here one the suite defines)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.errors import InputTooLong, MissingCaller, ModelNotFound, WrongTask
from openmaas.observability.metrics import Metrics
from openmaas.registry.composition import Registry
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.serving.engine import InferenceEngine
from openmaas.settings import Settings
from openmaas.tasks.embedding import EMBEDDING
from openmaas.tasks.text_generation import GenerationParams
from tests import reverse_task
from tests.reverse_task import REVERSE_TEXT, ReverseParams

OTHER = Principal(project="other", key_id=7, prefix="other", scopes=(Scope.INFERENCE,))
ACME = Principal(project="acme", key_id=8, prefix="acme", scopes=(Scope.INFERENCE,))


@pytest.fixture
def reversing(registry: Registry, tmp_path: Path) -> Iterator[Registry]:
    """The reverse-text task and runtime registered, and a private model of project acme."""
    reverse_task.register()
    model = reverse_task.write_model(tmp_path / "reverser")
    registry.registration.register_plan(
        "reverser", plan_directory(model), VersionSpec(project="acme"), caller=SYSTEM
    )
    yield registry
    reverse_task.unregister()


@pytest_asyncio.fixture
async def engine(reversing: Registry, tmp_path: Path) -> AsyncIterator[InferenceEngine]:
    settings = Settings(home=tmp_path / "home")
    running = InferenceEngine(reversing, settings, Metrics())
    await running.start()
    yield running
    await running.close()


def _entry_points(engine: InferenceEngine) -> dict[str, Any]:
    return {
        "resolve": lambda who: engine.resolve("reverser", caller=who),
        "list_models": lambda who: engine.list_models(caller=who),
        "get_model": lambda who: engine.get_model("reverser", caller=who),
        "load": lambda who: engine.load("reverser", caller=who),
        "unload": lambda who: engine.unload("reverser", caller=who),
        "infer": lambda who: engine.infer(REVERSE_TEXT, "reverser", ["abc"], caller=who),
        "generate": lambda who: engine.generate(
            "reverser", GenerationParams(), prompt="hi", caller=who
        ),
    }


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "entry", ["resolve", "list_models", "get_model", "load", "unload", "infer", "generate"]
)
async def test_every_entry_point_refuses_a_missing_caller(
    engine: InferenceEngine, entry: str
) -> None:
    with pytest.raises(MissingCaller):
        await _entry_points(engine)[entry](None)
    assert not engine.pool.residents()  # refused before anything was loaded


@pytest.mark.asyncio
async def test_a_task_registered_by_the_suite_is_served(engine: InferenceEngine) -> None:
    served = await engine.infer(
        REVERSE_TEXT, "reverser", ["abc", "one two"], ReverseParams(shout=True), caller=ACME
    )
    assert served.results == ["CBA", "OWT ENO"]
    assert served.prompt_tokens == 3  # words, as the model counts them
    assert (served.version.model, served.version.task) == ("reverser", "reverse-text")
    by_name = await engine.infer("reverse-text", "reverser", ["abc"], caller=ACME)
    assert by_name.results == ["cba"]  # default params


@pytest.mark.asyncio
async def test_the_callers_visibility_is_checked_with_the_explicit_caller(
    engine: InferenceEngine,
) -> None:
    with pytest.raises(ModelNotFound):
        await engine.infer(REVERSE_TEXT, "reverser", ["abc"], caller=OTHER)
    with pytest.raises(ModelNotFound):
        await engine.get_model("reverser", caller=OTHER)
    assert await engine.list_models(caller=OTHER) == []
    assert [m.name for m, _ in await engine.list_models(caller=ACME)] == ["reverser"]
    assert (await engine.resolve("reverser", caller=SYSTEM)).project == "acme"


@pytest.mark.asyncio
async def test_a_wrong_task_names_the_task_and_the_parameter(engine: InferenceEngine) -> None:
    with pytest.raises(WrongTask) as wrong:
        await engine.infer(EMBEDDING, "reverser", ["abc"], caller=SYSTEM)
    assert (wrong.value.task, wrong.value.param) == ("embedding", "model")
    assert "/v1" not in wrong.value.message  # routes are the API layer's to name


@pytest.mark.asyncio
async def test_the_generic_path_applies_token_limits(engine: InferenceEngine) -> None:
    long_text = " ".join(["word"] * 9)
    with pytest.raises(InputTooLong):
        await engine.infer(REVERSE_TEXT, "reverser", [long_text], caller=SYSTEM)
    served = await engine.infer(REVERSE_TEXT, "reverser", [long_text], caller=SYSTEM, truncate=True)
    assert served.prompt_tokens == 8


@pytest.mark.asyncio
@pytest.mark.parametrize(("chars", "off_loop"), [(9, False), (11, True)])
async def test_large_inputs_are_planned_and_counted_off_the_event_loop(
    reversing: Registry, tmp_path: Path, chars: int, off_loop: bool
) -> None:
    # Tokenizing costs time in proportion to the text: above `offload_input_chars` a worker
    # thread does it; below, the loop does, a thread hop costing more than the work.
    settings = Settings(home=tmp_path / "home", offload_input_chars=10)
    engine = InferenceEngine(reversing, settings, Metrics())
    await engine.start()
    try:
        await engine.infer(REVERSE_TEXT, "reverser", ["loads it"], caller=SYSTEM)
        model = engine.pool.residents()[0].model
        counted_in: list[int] = []
        count = model.count_tokens

        def spy(texts: Sequence[str]) -> list[int]:
            counted_in.append(threading.get_ident())
            return count(texts)

        model.count_tokens = spy  # type: ignore[method-assign]
        served = await engine.infer(REVERSE_TEXT, "reverser", ["x" * chars], caller=SYSTEM)
        assert served.results == ["x" * chars]
        assert (counted_in[0] != threading.get_ident()) is off_loop
    finally:
        await engine.close()
