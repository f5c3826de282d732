"""The task-generic engine: every entry point takes the caller explicitly and refuses a
missing one; one path serves any registered task contract (here one the suite defines)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.errors import InputTooLarge, InputTooLong, MissingCaller, ModelNotFound, WrongTask
from openmaas.observability.metrics import Metrics
from openmaas.registry.composition import Registry
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.serving.engine import InferenceEngine
from openmaas.settings import Settings
from openmaas.tasks.contract import Plan
from openmaas.tasks.embedding import EMBEDDING
from openmaas.tasks.text_generation import GenerationParams
from tests import reverse_task
from tests.reverse_task import POISON, REVERSE_TEXT, TASK, ReverseParams, Reverser, ReverseTask

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


@pytest_asyncio.fixture
async def strict(reversing: Registry, tmp_path: Path) -> AsyncIterator[InferenceEngine]:
    """An engine with a 12-character input limit that caches reverse-text results."""
    settings = Settings(home=tmp_path / "home", max_input_chars=12, cache_tasks=[TASK])
    running = InferenceEngine(reversing, settings, Metrics())
    await running.start()
    yield running
    await running.close()


def _entry_points(engine: InferenceEngine) -> dict[str, Any]:
    return {
        "resolve": lambda who: engine.resolve("reverser", caller=who),
        "list_models": lambda who: engine.list_models(caller=who),
        "list_versions": lambda who: engine.list_versions(caller=who),
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
    "entry",
    ["resolve", "list_models", "list_versions", "get_model", "load", "unload", "infer", "generate"],
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
    assert [m.name for _, m, _ in await engine.list_models(caller=ACME)] == ["reverser"]
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


# -- input limits, batch isolation and the per-project cache (issue 13) ----------------------


@pytest.mark.asyncio
async def test_a_text_past_the_character_limit_is_refused_before_it_is_queued(
    strict: InferenceEngine,
) -> None:
    for truncate in (False, True):  # the limit bounds work, not the model's context
        with pytest.raises(InputTooLarge) as refused:
            await strict.infer(
                REVERSE_TEXT, "reverser", ["short", "x" * 13], caller=ACME, truncate=truncate
            )
        assert refused.value.status_code == 400
        assert refused.value.param == "input"
        assert refused.value.message == (
            "input[1] has 13 characters; model 'reverser:1' accepts at most 12 "
            "(OPENMAAS_MAX_INPUT_CHARS). Split it into smaller texts"
        )
    (resident,) = strict.pool.residents()
    assert not resident.batchers  # nothing reached a batch
    assert (await strict.infer(REVERSE_TEXT, "reverser", ["x" * 12], caller=ACME)).results


@pytest.mark.asyncio
async def test_a_models_own_lower_limits_apply(strict: InferenceEngine) -> None:
    await strict.load("reverser", caller=ACME)
    (resident,) = strict.pool.residents()
    model: Any = resident.model
    model.max_input_chars = 4
    with pytest.raises(InputTooLarge, match="accepts at most 4. Split"):
        await strict.infer(REVERSE_TEXT, "reverser", ["abcde"], caller=ACME)
    # A model whose work grows with its sentences has them counted (off the event loop).
    counted: list[Sequence[str]] = []

    def count_sentences(texts: Sequence[str]) -> list[int]:
        counted.append(texts)
        return [text.count(".") for text in texts]

    model.max_input_chars = None
    model.max_input_sentences = 2
    model.count_sentences = count_sentences
    with pytest.raises(InputTooLarge) as refused:
        await strict.infer(REVERSE_TEXT, "reverser", ["a.b.", "a.b.c."], caller=ACME)
    assert "input[1] has 3 sentences; model 'reverser:1' takes at most 2" in refused.value.message
    assert (await strict.infer(REVERSE_TEXT, "reverser", ["a.b."], caller=ACME)).results
    assert counted == [["a.b.", "a.b.c."], ["a.b."]]


@pytest.mark.asyncio
async def test_a_poisoned_item_fails_only_its_own_request(engine: InferenceEngine) -> None:
    await engine.load("reverser", caller=ACME)
    (resident,) = engine.pool.residents()
    batches: list[list[str]] = []
    model: Any = resident.model
    reverse = model.reverse

    def recorded(texts: Sequence[str], shout: bool) -> list[str]:
        batches.append(list(texts))
        return list(reverse(texts, shout))

    model.reverse = recorded
    requests = [["abc"], [POISON], ["def", "ghi"]]
    outcomes = await asyncio.gather(
        *(engine.infer(REVERSE_TEXT, "reverser", texts, caller=ACME) for texts in requests),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], ValueError)
    assert [o.results for o in outcomes if not isinstance(o, BaseException)] == [
        ["cba"],
        ["fed", "ihg"],
    ]
    # They shared a batch, which failed; each item then ran alone.
    assert batches == [["abc", POISON, "def", "ghi"], ["abc"], [POISON], ["def"], ["ghi"]]


class CachedReverse(ReverseTask):
    """The reverse task with results cached per item (as embeddings are)."""

    def plan(
        self,
        model: Reverser,
        inputs: Sequence[str],
        params: ReverseParams,
        *,
        label: str,
        truncate: bool,
    ) -> Plan:
        planned = super().plan(model, inputs, params, label=label, truncate=truncate)
        return replace(planned, cache_as=TASK)


def _cache_counts(engine: InferenceEngine) -> tuple[float | None, float | None]:
    labels = {"model": "reverser", "task": TASK}
    read = engine.metrics.registry.get_sample_value
    return read("openmaas_cache_hits_total", labels), read("openmaas_cache_misses_total", labels)


@pytest.mark.asyncio
async def test_the_response_cache_is_each_projects_own(strict: InferenceEngine) -> None:
    cached = CachedReverse()
    assert (await strict.infer(cached, "reverser", ["secret"], caller=ACME)).results == ["terces"]
    assert _cache_counts(strict) == (0, 1)
    # Another project (here the system, which sees acme's private model) sends the same text:
    # computed again, not answered from acme's entry.
    assert (await strict.infer(cached, "reverser", ["secret"], caller=SYSTEM)).results == ["terces"]
    assert _cache_counts(strict) == (0, 2)
    await strict.infer(cached, "reverser", ["secret"], caller=ACME)
    await strict.infer(cached, "reverser", ["secret"], caller=SYSTEM)
    assert _cache_counts(strict) == (2, 2)


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
