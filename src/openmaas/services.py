"""The long-lived services of one server process, built from settings and started once.

Example::

    services = Services.build(Settings(home=tmp_path))
    services.start()
    ...
    services.close()
"""

from __future__ import annotations

from dataclasses import dataclass

from openmaas.catalog.service import CatalogService
from openmaas.observability.metrics import Metrics
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.intake import ArchiveLimits
from openmaas.registry.service import RegistryService
from openmaas.serving.engine import InferenceEngine
from openmaas.settings import Settings
from openmaas.store.database import Database


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    registry: RegistryService
    catalog: CatalogService
    metrics: Metrics
    engine: InferenceEngine

    @classmethod
    def build(cls, settings: Settings) -> Services:
        db = Database(settings.database_url)
        registry = RegistryService(
            db,
            ArtifactStore(settings.artifact_root),
            allow_pickle=settings.allow_pickle,
            limits=ArchiveLimits(
                max_total_bytes=settings.max_extracted_bytes,
                max_members=settings.max_archive_members,
            ),
        )
        catalog = CatalogService(registry)
        metrics = Metrics()
        engine = InferenceEngine(registry, settings, metrics)
        return cls(
            settings=settings,
            db=db,
            registry=registry,
            catalog=catalog,
            metrics=metrics,
            engine=engine,
        )

    def start(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db.migrate()
        self.registry.start()
        if self.settings.catalog_autoregister:
            self.catalog.register_available()

    async def start_serving(self) -> None:
        """Start the inference engine (needs the event loop): preload models, idle reaper."""
        await self.engine.start()

    async def close_serving(self) -> None:
        await self.engine.close()

    def close(self) -> None:
        self.db.close()
