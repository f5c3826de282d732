"""The router: a model reference (`name`, `name@alias`, `name:version`) to the version serving it.

Resolutions are cached for `ttl_s` so the hot path does not query the store on every request.
Changes made through this process's registry invalidate the cache at once; changes made by
another process (another server on the same database) are seen within `ttl_s`. Requests
already running keep the version they resolved, so an alias move never fails them.

Example::

    router = ModelRouter(registry, ttl_s=2.0)
    version = await router.resolve("all-minilm-l6-v2@production")
"""

from __future__ import annotations

import asyncio
import time

from openmaas.auth.entities import SYSTEM
from openmaas.registry.composition import Registry
from openmaas.registry.entities import ModelVersion


class ModelRouter:
    def __init__(self, registry: Registry, *, ttl_s: float = 2.0) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, ModelVersion]] = {}
        # One store lookup per reference at a time: when an entry expires under load, the
        # requests in flight share the lookup instead of each starting its own.
        self._lookups: dict[str, asyncio.Future[ModelVersion]] = {}
        registry.add_listener(self.invalidate)

    async def resolve(self, reference: str) -> ModelVersion:
        hit = self._cache.get(reference)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        pending = self._lookups.get(reference)
        if pending is None:
            # The cache serves every caller, so it resolves as the server; the engine then
            # checks that the caller may see what it resolved.
            pending = asyncio.ensure_future(
                asyncio.to_thread(self.registry.resolve, reference, caller=SYSTEM)
            )
            self._lookups[reference] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(reference, None))
        version = await asyncio.shield(pending)
        self._cache[reference] = (now, version)
        return version

    def invalidate(self, model: str) -> None:
        """Forget every cached resolution of `model` (called on alias moves and deletes).

        Called from whichever thread changed the registry: it copies the entries in one step
        (atomic under the GIL) and removes with `pop`, so a concurrent `resolve` is safe.
        """
        for reference, (_, version) in list(self._cache.items()):
            # A reference may name a model that did not exist when it was cached, hence
            # the name check besides the cached version's model.
            if version.model == model or _model_part(reference) == model:
                self._cache.pop(reference, None)


def _model_part(reference: str) -> str:
    for separator in ("@", ":"):
        if separator in reference:
            return reference.split(separator, 1)[0]
    return reference
