"""A hyperparameter search's request: the space, the metric it optimizes, its budget.

A space maps recipe hyperparameters to distributions::

    {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": true},
     "n_filters": {"type": "int", "low": 16, "high": 128, "step": 16},
     "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]}}

`SearchSpec.parse` checks it against the recipe before anything runs: an unknown parameter,
a bad range, a value of the wrong type or one the recipe refuses is an `InvalidRequest`
naming `search.space.<name>`. Nothing here imports optuna or torch; `suggest` imports optuna
when a trial asks.

Example::

    spec = SearchSpec.parse({"n_trials": 20}, recipe, given={}, n_examples=1000)
    params = spec.suggest(trial)  # {"learning_rate": 0.0031, ...}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from openmaas.errors import InvalidRequest
from openmaas.training.recipe import Recipe

if TYPE_CHECKING:
    import optuna

MAX_TRIALS = 500
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_PARAMETERS = 32
MAX_CHOICES = 64
DIRECTIONS = ("maximize", "minimize")
TYPES = ("float", "int", "categorical")
KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
SPEC_KEYS = {
    "space",
    "metric",
    "direction",
    "n_trials",
    "timeout_s",
    "pruning",
    "startup_trials",
    "warmup_epochs",
}


@dataclass(frozen=True, slots=True)
class Distribution:
    """One hyperparameter's range: `low`..`high` (ints or floats), or `choices`."""

    name: str
    type: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "int":
            step = int(self.step) if self.step is not None else 1
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        if any(isinstance(c, list) for c in self.choices):
            # Optuna's categories are scalars: a list (filter widths) travels as its JSON.
            picked = trial.suggest_categorical(self.name, [json.dumps(c) for c in self.choices])
            return json.loads(picked)
        return trial.suggest_categorical(self.name, list(self.choices))

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        low, high = (int(self.low), int(self.high)) if self.type == "int" else (self.low, self.high)
        out: dict[str, Any] = {"type": self.type, "low": low, "high": high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = int(self.step) if self.type == "int" else self.step
        return out


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """A checked search: what it varies, what it optimizes, how long it may take."""

    space: tuple[Distribution, ...]
    metric: str  # a per-epoch validation metric: val_<name>
    direction: str  # maximize | minimize
    n_trials: int
    timeout_s: float | None
    pruning: bool = True
    startup_trials: int = 5  # trials that run whole before any is pruned
    warmup_epochs: int = 0  # epochs of a trial never pruned

    @classmethod
    def parse(
        cls, raw: Mapping[str, Any], recipe: Recipe, *, given: Mapping[str, Any], n_examples: int
    ) -> SearchSpec:
        """Check `raw` (the request's `search`) against the recipe; `given` are the job's
        own hyperparameters, which the space's values replace."""
        unknown = sorted(set(raw) - SPEC_KEYS)
        if unknown:
            raise InvalidRequest(
                f"unknown search option {unknown[0]!r} (options: {', '.join(sorted(SPEC_KEYS))})",
                param=f"search.{unknown[0]}",
            )
        space_raw = raw.get("space")
        if space_raw is None:
            space_raw = recipe.search_space
            if not space_raw:
                raise InvalidRequest(
                    f"recipe {recipe.name!r} declares no default search space: give one",
                    param="search.space",
                )
        if not isinstance(space_raw, Mapping) or not space_raw:
            raise InvalidRequest(
                "search.space maps hyperparameters to ranges, e.g. "
                '{"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": true}}',
                param="search.space",
            )
        if len(space_raw) > MAX_PARAMETERS:
            raise InvalidRequest(
                f"search.space: at most {MAX_PARAMETERS} parameters", param="search.space"
            )
        defaults = recipe.defaults()
        space = tuple(
            _distribution(str(name), value, recipe, defaults, given, n_examples)
            for name, value in space_raw.items()
        )
        metric = _metric(raw.get("metric"), recipe, given, n_examples)
        direction = raw.get("direction")
        if direction is None:
            direction = "minimize" if metric == "val_loss" else "maximize"
        if direction not in DIRECTIONS:
            raise InvalidRequest(
                f"search.direction must be maximize or minimize, got {direction!r}",
                param="search.direction",
            )
        return cls(
            space=space,
            metric=metric,
            direction=str(direction),
            n_trials=_whole(raw.get("n_trials", 20), "n_trials", 1, MAX_TRIALS),
            timeout_s=(
                None
                if raw.get("timeout_s") is None
                else float(_number(raw["timeout_s"], "search.timeout_s", 1, MAX_TIMEOUT_S))
            ),
            pruning=_flag(raw.get("pruning", True), "pruning"),
            startup_trials=_whole(raw.get("startup_trials", 5), "startup_trials", 0, MAX_TRIALS),
            warmup_epochs=_whole(raw.get("warmup_epochs", 0), "warmup_epochs", 0, 10_000),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpec:
        """As `to_dict` wrote it (a job's options): already checked."""
        space = tuple(
            Distribution(
                name=name,
                type=value["type"],
                low=float(value.get("low", 0.0)),
                high=float(value.get("high", 0.0)),
                log=bool(value.get("log", False)),
                step=None if value.get("step") is None else float(value["step"]),
                choices=tuple(value.get("choices", ())),
            )
            for name, value in data["space"].items()
        )
        return cls(
            space=space,
            metric=str(data["metric"]),
            direction=str(data["direction"]),
            n_trials=int(data["n_trials"]),
            timeout_s=None if data.get("timeout_s") is None else float(data["timeout_s"]),
            pruning=bool(data.get("pruning", True)),
            startup_trials=int(data.get("startup_trials", 5)),
            warmup_epochs=int(data.get("warmup_epochs", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": {d.name: d.to_dict() for d in self.space},
            "metric": self.metric,
            "direction": self.direction,
            "n_trials": self.n_trials,
            "timeout_s": self.timeout_s,
            "pruning": self.pruning,
            "startup_trials": self.startup_trials,
            "warmup_epochs": self.warmup_epochs,
        }

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {d.name: d.suggest(trial) for d in self.space}

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


def _distribution(
    name: str,
    raw: Any,
    recipe: Recipe,
    defaults: Mapping[str, Any],
    given: Mapping[str, Any],
    n_examples: int,
) -> Distribution:
    param = f"search.space.{name}"
    if name not in defaults:
        known = ", ".join(sorted(defaults))
        raise InvalidRequest(
            f"{param}: recipe {recipe.name!r} has no hyperparameter {name!r} (known: {known})",
            param=param,
        )
    if not isinstance(raw, Mapping) or raw.get("type") not in TYPES:
        raise InvalidRequest(
            f"{param}: give {{'type': 'float' | 'int' | 'categorical', ...}}", param=param
        )
    kind = str(raw["type"])
    extra = sorted(set(raw) - KEYS[kind])
    if extra:
        raise InvalidRequest(
            f"{param}: a {kind} range takes {', '.join(sorted(KEYS[kind]))}, not {extra[0]!r}",
            param=param,
        )
    default = defaults[name]
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices or len(choices) > MAX_CHOICES:
            raise InvalidRequest(
                f"{param}: choices must be a list of 1 to {MAX_CHOICES} values", param=param
            )
        for choice in choices:
            if not _same_type(choice, default):
                raise InvalidRequest(
                    f"{param}: choice {choice!r} is not a {type(default).__name__} like the "
                    f"default {default!r}",
                    param=param,
                )
            _accepted(recipe, given, name, choice, n_examples, param)
        if len({json.dumps(choice) for choice in choices}) < len(choices):
            raise InvalidRequest(f"{param}: a choice is listed twice", param=param)
        return Distribution(name, kind, choices=tuple(choices))
    numeric = isinstance(default, int | float) and not isinstance(default, bool)
    if not numeric or (kind == "int" and not isinstance(default, int)):
        raise InvalidRequest(
            f"{param}: {name} is a {type(default).__name__} (default {default!r}); "
            f"search it with {'a float range' if numeric else 'categorical choices'}",
            param=param,
        )
    integer = kind == "int"
    low = _number(raw.get("low"), f"{param}.low", integer=integer)
    high = _number(raw.get("high"), f"{param}.high", integer=integer)
    if not low < high:
        raise InvalidRequest(f"{param}: low ({low}) must be below high ({high})", param=param)
    log = _flag(raw.get("log", False), f"space.{name}.log")
    step = raw.get("step")
    if step is not None:
        step = _number(step, f"{param}.step", integer=integer)
        if step <= 0 or step > high - low:
            raise InvalidRequest(
                f"{param}: step must be above 0 and at most high - low", param=param
            )
        if log:
            raise InvalidRequest(f"{param}: a log range takes no step", param=param)
        steps = (high - low) / step
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise InvalidRequest(
                f"{param}: high - low ({high - low:g}) must be a whole number of steps ({step:g})",
                param=param,
            )
    if log and low <= 0:
        raise InvalidRequest(f"{param}: a log range needs low above 0", param=param)
    for bound in (low, high):
        _accepted(recipe, given, name, bound, n_examples, param)
    return Distribution(name, kind, low=float(low), high=float(high), log=log, step=step)


def _accepted(
    recipe: Recipe,
    given: Mapping[str, Any],
    name: str,
    value: Any,
    n_examples: int,
    param: str,
) -> None:
    try:
        recipe.resolve({**given, name: value}, max(1, n_examples))
    except ValueError as exc:
        raise InvalidRequest(f"{param}: {exc}", param=param) from None


def _metric(raw: Any, recipe: Recipe, given: Mapping[str, Any], n_examples: int) -> str:
    defaults = recipe.defaults()
    if raw is None:
        stopping = given.get("early_stopping_metric", defaults.get("early_stopping_metric"))
        if not isinstance(stopping, str) or stopping == "auto":
            stopping = defaults.get("early_stopping_metric")
        if not isinstance(stopping, str):
            raise InvalidRequest(
                f"recipe {recipe.name!r} reports no validation metric to search on",
                param="search.metric",
            )
        return f"val_{stopping}"
    if not isinstance(raw, str) or not raw.startswith("val_"):
        raise InvalidRequest(
            f"search.metric must be a validation metric, val_<name> (e.g. val_macro_f1), "
            f"got {raw!r}",
            param="search.metric",
        )
    if "early_stopping_metric" in defaults:
        try:
            recipe.resolve({**given, "early_stopping_metric": raw[4:]}, max(1, n_examples))
        except ValueError as exc:
            raise InvalidRequest(f"search.metric {raw!r}: {exc}", param="search.metric") from None
    return raw


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and (
            isinstance(default, float) or isinstance(value, int)
        )
    if isinstance(default, list):
        return isinstance(value, list) and all(_same_type(v, d) for v in value for d in default[:1])
    return isinstance(value, type(default))


def _number(
    value: Any,
    param: str,
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = isinstance(value, int) or float(value).is_integer()
    if not ok:
        what = "an integer" if integer else "a number"
        raise InvalidRequest(f"{param} must be {what}, got {value!r}", param=param)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidRequest(f"{param} must be {low:g}..{high:g}, got {value!r}", param=param)
    return int(value) if integer else float(value)


def _whole(value: Any, name: str, low: int, high: int) -> int:
    return int(_number(value, f"search.{name}", low, high, integer=True))


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"search.{name} must be true or false", param=f"search.{name}")
    return value
