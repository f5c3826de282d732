"""Rate limits and quotas of a project or an API key, as stored in their `limits` JSON column.

A project's policy bounds the project's total; a key's policy overrides the project's values
for that key alone. An unset field (None) is unlimited on a project and inherited on a key.

Example::

    project = LimitPolicy.from_json({"requests_per_minute": 600, "tokens_per_day": 1_000_000})
    key = LimitPolicy.from_json({"requests_per_minute": 60})
    project.overridden_by(key)  # 60 requests/min, 1,000,000 tokens/day for this key
    key.to_json()  # {"requests_per_minute": 60}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from openmaas.errors import InvalidRequest

# Beyond any real quota, and far inside the 64-bit counters of Redis.
MAX_LIMIT = 10**15


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None  # UTC calendar day
    tokens_per_month: int | None = None  # UTC calendar month
    training_jobs_per_day: int | None = None  # UTC calendar day

    @classmethod
    def from_json(cls, data: object) -> LimitPolicy:
        """Validate a JSON object of limits; a null value leaves that limit unset.

        Raises InvalidRequest naming the field for an unknown name or a value that is not a
        whole number from 0 to MAX_LIMIT.
        """
        if not isinstance(data, Mapping):
            raise InvalidRequest(
                f"limits must be a JSON object with the fields {_known()}", param="limits"
            )
        names = {field.name for field in fields(cls)}
        values: dict[str, int | None] = {}
        for name, value in data.items():
            if name not in names:
                raise InvalidRequest(
                    f"unknown limit {name!r} (limits: {_known()})", param=f"limits.{name}"
                )
            # bool is an int subclass; `true` is not a count.
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT
            ):
                raise InvalidRequest(
                    f"limit {name!r} must be a whole number from 0 to {MAX_LIMIT}, "
                    f"or null for no limit; got {value!r}",
                    param=f"limits.{name}",
                )
            values[name] = value
        return cls(**values)

    def to_json(self) -> dict[str, int]:
        """The set fields only, as stored in the `limits` column."""
        return {
            field.name: value
            for field in fields(self)
            if (value := getattr(self, field.name)) is not None
        }

    def overridden_by(self, override: LimitPolicy) -> LimitPolicy:
        """This policy with every field the override sets replaced by the override's value."""
        return replace(self, **override.to_json())

    @property
    def is_unlimited(self) -> bool:
        return not self.to_json()


def _known() -> str:
    return ", ".join(field.name for field in fields(LimitPolicy))
