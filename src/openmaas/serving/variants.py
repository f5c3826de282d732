"""Which build of a version the pool loads: its ONNX variant (the export the server builds of
each new encoder, `optimize/auto_onnx.py`) when the export matched it within its job's
tolerance, else its own files.

`VariantChoice.preferred` is the pool's `PreferredFor`: it reads the version afresh when a
load starts. Each lease passes `serving_variant_id` of the resolved version: a version loaded
before its variant existed (the job runs on a worker, often after the first requests) is
swapped for a fresh load once the resolution lists the variant (`ModelPool.lease`).

Example::

    pool = ModelPool(open_source, limits, metrics, preferred=VariantChoice(registry).preferred)
    async with pool.lease(version_key(version), serving_variant_id(version)) as resident:
        ...
"""

from __future__ import annotations

from openmaas.auth.entities import SYSTEM
from openmaas.registry.composition import Registry
from openmaas.registry.entities import ModelVersion, VersionVariant
from openmaas.runtimes.base import ModelSource
from openmaas.serving.pool import Preferred

# The variant kind that serves in place of a version (`registry.variants`).
ONNX_VARIANT = "onnx"


def serving_variant_id(version: ModelVersion) -> int | None:
    """What the pool's `lease` compares with the build its resident tried (see `lease`)."""
    variant = serving_variant(version)
    return variant.id if variant is not None else None


def serving_variant(version: ModelVersion) -> VersionVariant | None:
    """The variant that serves `version` in place of its own files: its newest ONNX export
    that matched it within the export job's tolerance."""
    fitting = [v for v in version.variants if v.kind == ONNX_VARIANT and v.within_tolerance]
    return fitting[-1] if fitting else None


class VariantChoice:
    """The engine's side of serving variants (see the module)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def preferred(self, name: str, number: int) -> Preferred | None:
        """The version's serving variant, read afresh, with what opens its files."""
        version = self.registry.get_version(name, number, caller=SYSTEM)
        variant = serving_variant(version)
        if variant is None:
            return None

        def open_variant() -> ModelSource:
            opened = self.registry.files.open_variant(version, variant, caller=SYSTEM)
            return ModelSource.from_version(
                opened.version, opened.directory, release_directory=opened.close
            )

        return Preferred(variant.id, f"{variant.kind} variant", open_variant)
