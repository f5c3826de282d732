"""Build the FastAPI application. No module globals: everything lives on `app.state`.

Example::

    app = build_app(Settings(home=Path("state")))
    uvicorn.run(app)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from openmaas import __version__
from openmaas.api.errors import install_error_handlers
from openmaas.api.middleware import (
    BodyLimitMiddleware,
    CancelOnDisconnectMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
)
from openmaas.api.routes import (
    audio,
    catalog,
    completions,
    embeddings,
    health,
    metrics,
    models,
    moderations,
    registry,
    tasks,
    v2,
)
from openmaas.services import Services
from openmaas.settings import MiB, Settings

# Admin and JSON routes never need more than this; uploads have their own setting.
JSON_BODY_LIMIT_BYTES = 16 * MiB


def build_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The server for `settings`; pass `services` to share already-started ones (tests)."""
    owned = services is None
    active = services or Services.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            active.start()
        await active.start_serving()
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
    app.add_middleware(
        BodyLimitMiddleware,
        limit=JSON_BODY_LIMIT_BYTES,
        upload_limit=settings.max_upload_bytes,
        limits={"/v1/audio/transcriptions": settings.max_audio_mb * MiB},
    )
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=active.metrics)
    app.add_middleware(RequestIdMiddleware)
    routers = (health, metrics, registry, catalog, models, embeddings, completions, moderations)
    for module in (*routers, audio, tasks, v2):
        app.include_router(module.router)
    return app
