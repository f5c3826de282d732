"""The router: a model reference (`name`, `name@alias`, `name:version`) to the version serving it.

What a bare name means depends on the caller's project (names are each project's own; see
`RegistryStore.find_model`), so resolutions are cached per project (and per admin-ness), for
`ttl_s` so the hot path does not query the store on every request.
Changes made through this process's registry invalidate the cache at once; changes made by
another process (another server on the same database) are seen within `ttl_s`. Requests
already running keep the version they resolved, so an alias move never fails them.

Example::

    router = ModelRouter(registry, ttl_s=2.0)
    version = await router.resolve("all-minilm-l6-v2@production", caller=principal)
"""

from __future__ import annotations

import asyncio
import time

from openmaas.auth.access import is_admin
from openmaas.auth.entities import Principal
from openmaas.registry.composition import Registry
from openmaas.registry.entities import ModelVersion
from openmaas.registry.names import split_qualified

# Whose view a resolution is: a bare name resolves the same for every key of one project
# with the same admin-ness, so they share cache entries and lookups.
ViewKey = tuple[str, bool, str]  # (project, admin, reference)


class ModelRouter:
    def __init__(self, registry: Registry, *, ttl_s: float = 2.0) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self._cache: dict[ViewKey, tuple[float, ModelVersion]] = {}
        # One store lookup per reference and view at a time: when an entry expires under
        # load, the requests in flight share the lookup instead of each starting its own.
        self._lookups: dict[ViewKey, asyncio.Future[ModelVersion]] = {}
        registry.add_listener(self.invalidate)

    async def resolve(self, reference: str, *, caller: Principal) -> ModelVersion:
        """The version `reference` names for `caller` (who may see it: the store checks)."""
        key = (caller.project, is_admin(caller), reference)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        pending = self._lookups.get(key)
        if pending is None:
            pending = asyncio.ensure_future(
                asyncio.to_thread(self.registry.resolve, reference, caller=caller)
            )
            self._lookups[key] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(key, None))
        version = await asyncio.shield(pending)
        self._cache[key] = (now, version)
        return version

    def invalidate(self, model: str) -> None:
        """Forget every cached resolution of `model` (called on alias moves and deletes).

        Called from whichever thread changed the registry: it copies the entries in one step
        (atomic under the GIL) and removes with `pop`, so a concurrent `resolve` is safe.
        """
        for key, (_, version) in list(self._cache.items()):
            # A reference may name a model that did not exist when it was cached (a project's
            # new model now shadows the public one), hence the name check besides the cached
            # version's model.
            if version.model == model or _model_part(key[2]) == model:
                self._cache.pop(key, None)


def _model_part(reference: str) -> str:
    for separator in ("@", ":"):
        if separator in reference:
            reference = reference.split(separator, 1)[0]
            break
    return split_qualified(reference)[1]  # cached references all parsed once already
