"""Build the FastAPI application. No module globals: everything lives on `app.state`.

Example::

    app = build_app(Settings(home=Path("state")))
    uvicorn.run(app)
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from openmaas import __version__
from openmaas.api.admin import (
    audit,
    catalog,
    datasets,
    evaluations,
    keys,
    optimization,
    registry,
    rollout,
    training,
    usage,
)
from openmaas.api.authentication import AuthenticationMiddleware
from openmaas.api.batch_dispatch import InProcessDispatch
from openmaas.api.deps import requires
from openmaas.api.errors import install_error_handlers
from openmaas.api.metering import MeteringMiddleware
from openmaas.api.middleware import (
    BodyLimitMiddleware,
    CancelOnDisconnectMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
)
from openmaas.api.openai import (
    audio,
    batches,
    completions,
    embeddings,
    files,
    fine_tuning,
    models,
    moderations,
    speech,
)
from openmaas.api.ops import health, metrics
from openmaas.api.route_table import RouteTable
from openmaas.api.tasks import explain
from openmaas.api.tasks import routes as tasks
from openmaas.api.tfserving import routes as tfserving
from openmaas.api.tracing import TracingMiddleware
from openmaas.api.ui.routes import install_console
from openmaas.api.v2 import routes as v2
from openmaas.auth.bootstrap import check_dev_no_auth, warn_dev_no_auth
from openmaas.auth.scopes import Scope
from openmaas.settings import MiB, Settings
from openmaas.wiring import Services

# Admin and JSON routes never need more than this; uploads have their own setting.
JSON_BODY_LIMIT_BYTES = 16 * MiB


def settle_heap() -> None:
    """Take what is alive once the server has started (imported libraries, preloaded models:
    about half a million objects) out of the cyclic garbage collector's walks. A full
    collection over them holds the event loop, and the GIL, for about 140 ms; frozen, the
    collector walks only what came after. At 64 clients embedding throughput rose by about 4%
    (288 against 275 sentences/s, runs alternated). Models loaded later stay collectable."""
    gc.collect()
    gc.freeze()


def build_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The server for `settings`; pass `services` to share already-started ones (tests)."""
    check_dev_no_auth(settings)
    owned = services is None
    active = services or Services.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            active.start()
        if settings.dev_no_auth:
            warn_dev_no_auth()
        await active.start_serving()
        # Batches run their requests through this very app, in this process.
        active.start_batches(InProcessDispatch(app, asyncio.get_running_loop()))
        if owned:
            settle_heap()
        try:
            yield
        finally:
            await active.close_serving()
            if owned:
                active.close()

    app = FastAPI(
        title="OpenMaaS",
        version=__version__,
        description="Self-hosted Model-as-a-Service: registry, serving, training.",
        lifespan=lifespan,
    )
    app.state.services = active
    install_error_handlers(app)
    # The scopes each group of routes needs (v2 sets its own per route; health is open).
    # Inference first: a request is matched against the routes in this order, one by one;
    # with /v1/embeddings behind every admin route, matching made half the Python calls of
    # an embedding request. No path of one group is a pattern another could take.
    inference = requires(Scope.INFERENCE)
    guards = {
        embeddings: inference,
        completions: inference,
        tasks: inference,
        explain: inference,
        # Before OpenAI's /v1/models/{id}, which would take /v1/models/x/versions/2 for a name.
        tfserving: None,  # per route: :predict needs inference, the status routes models
        moderations: inference,
        audio: inference,
        speech: inference,
        v2: None,
        health: None,
        keys: None,
        metrics: requires(Scope.ADMIN),
        registry: requires(Scope.MODELS_READ, write=(Scope.MODELS_WRITE,)),
        rollout: requires(Scope.MODELS_READ, write=(Scope.MODELS_WRITE,)),
        catalog: requires(Scope.MODELS_READ, write=(Scope.MODELS_WRITE,)),
        models: requires(Scope.INFERENCE, Scope.MODELS_READ),
        # Every key sees its own project's usage; the route narrows what it may ask for.
        usage: requires(),
        audit: requires(Scope.ADMIN),
        # Either scope; each purpose's files need their own (see api/openai/files.py).
        files: requires(Scope.TRAINING, Scope.INFERENCE),
        batches: inference,
        datasets: requires(Scope.TRAINING),
        fine_tuning: requires(Scope.TRAINING),
        training: requires(Scope.TRAINING),
        optimization: requires(Scope.TRAINING),
        evaluations: requires(Scope.TRAINING),
    }
    routes = RouteTable([(module.router, guard) for module, guard in guards.items()])
    app.add_middleware(
        BodyLimitMiddleware,
        limit=JSON_BODY_LIMIT_BYTES,
        template_of=routes.template,
        # The routes that take large bodies, and nothing else (by route template).
        routes={
            "/v1/registry/models/{name}/versions/upload": settings.max_upload_bytes,
            "/v1/registry/models/{name}/versions/word_vectors": settings.max_upload_bytes,
            "/v1/audio/transcriptions": settings.max_audio_mb * MiB,
            "/v1/audio/translations": settings.max_audio_mb * MiB,
            # The dataset limit plus room for the multipart framing; the service enforces
            # the exact size with a message naming OPENMAAS_MAX_DATASET_MB.
            "/v1/files": settings.max_dataset_mb * MiB + MiB,
            "/v1/datasets": settings.max_dataset_mb * MiB + MiB,
        },
    )
    # Outside the body limit: a request without a usable key is refused before anything,
    # its body included, is looked at.
    app.add_middleware(AuthenticationMiddleware, services=active, routes=routes)
    # The web console (/ui); its session cookie is turned into a caller before the above.
    install_console(app, active)
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=active.metrics)
    app.add_middleware(MeteringMiddleware, services=active)
    if settings.traces_endpoint is not None:  # no tracing, no middleware: nothing to pay
        app.add_middleware(TracingMiddleware)
    app.add_middleware(RequestIdMiddleware)
    for module, guard in guards.items():
        app.include_router(module.router, dependencies=[Depends(guard)] if guard else [])
    return app
