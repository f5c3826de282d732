"""Per-model Ray Serve settings: replicas, autoscaling, scale to zero, resources per replica.

`OPENMAAS_RAY_DEPLOYMENTS` maps a model (`name`, `project/name`) or `*` (every other model)
to these fields; what a model's entry leaves out comes from `*`, then from the defaults here.
A bad entry stops the server at start with the key and field to fix. Imports no Ray.

Example::

    table = DeploymentTable.parse({"*": {"num_cpus": 0.5}, "bert": {"max_replicas": 4}})
    table.for_model("default/bert").max_replicas  # -> 4
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from openmaas.errors import InvalidRequest

DEFAULT_KEY = "*"


class ReplicaSettings(BaseModel):
    """How one model version's deployment scales and what each replica reserves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(default=1, ge=0, description="0: scale to zero after `idle_s`.")
    max_replicas: int = Field(default=1, ge=1)
    # Serve's autoscaling signal: requests queued at or running on a replica. The replica
    # batches what it holds, so a batch's worth per replica before another one starts.
    target_ongoing_requests: float = Field(default=32.0, gt=0)
    # Past this many a replica takes no more; the handle queues the rest until one frees.
    max_ongoing_requests: int = Field(default=256, ge=1)
    idle_s: float = Field(
        default=300.0, gt=0, description="Below target (or idle, to zero) this long: scale down."
    )
    coalesce: bool = Field(
        default=True,
        description=(
            "With a fixed number of replicas (min = max), requests that arrive while two calls"
            " a replica are in flight go to a replica together, as one call."
        ),
    )
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ReplicaSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        return self

    def autoscaling(self) -> dict[str, Any]:
        """Serve's `autoscaling_config`."""
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            # A first request to a model at zero waits for one replica, not for the minimum.
            "initial_replicas": self.min_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": min(self.idle_s, 3.0),
            "downscale_delay_s": self.idle_s,
            "downscale_to_zero_delay_s": self.idle_s,
            # Idle judged over the idle window (Serve's default looks back 30 s).
            "look_back_period_s": min(self.idle_s, 30.0),
        }


@dataclass(frozen=True, slots=True)
class DeploymentTable:
    default: ReplicaSettings
    models: Mapping[str, ReplicaSettings]

    @classmethod
    def parse(cls, raw: Mapping[str, Mapping[str, Any]]) -> DeploymentTable:
        """The table `OPENMAAS_RAY_DEPLOYMENTS` gives; InvalidRequest naming the entry."""
        base = dict(raw.get(DEFAULT_KEY) or {})
        default = _settings(DEFAULT_KEY, base)
        models = {
            key: _settings(key, {**base, **dict(entry)})
            for key, entry in raw.items()
            if key != DEFAULT_KEY
        }
        return cls(default, models)

    def for_model(self, qualified_name: str) -> ReplicaSettings:
        """The settings of `project/name`: its own entry, its bare name's, else `*`."""
        bare = qualified_name.partition("/")[2] or qualified_name
        found = self.models.get(qualified_name) or self.models.get(bare)
        return found if found is not None else self.default


def _settings(key: str, fields: Mapping[str, Any]) -> ReplicaSettings:
    try:
        return ReplicaSettings.model_validate(dict(fields))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in error.errors()
        )
        raise InvalidRequest(
            f"OPENMAAS_RAY_DEPLOYMENTS[{key!r}]: {problems}", param="ray_deployments"
        ) from None
