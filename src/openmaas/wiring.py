"""The one place that builds services from settings: the server's, the worker's, the CLI's.

Nothing else constructs a `Database`, an `ArtifactStore` or a `Registry` from settings: the
server builds `Services`, a job worker and the offline admin commands call the builders.

Example::

    services = Services.build(Settings(home=tmp_path))
    services.start()
    ...
    services.close()

    registry = build_registry(settings)  # a worker, or `openmaas admin`
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openmaas.auth.bootstrap import announce_admin_key, load_pepper
from openmaas.auth.bruteforce import BruteForceGuard
from openmaas.auth.clients import ClientAddresses
from openmaas.auth.enforcement import Limits
from openmaas.auth.entities import SYSTEM
from openmaas.auth.http import Authenticator
from openmaas.auth.ratelimit import RateLimiter
from openmaas.auth.service import AuthService
from openmaas.batches.entities import LineExecutor
from openmaas.batches.kind import BatchJobKind
from openmaas.batches.runner import BatchRunner
from openmaas.batches.service import BatchService
from openmaas.batches.store import BatchStore
from openmaas.catalog.definitions import CatalogDefinition, load_catalog
from openmaas.catalog.service import CatalogService
from openmaas.crypto import Keyring, key_from_settings
from openmaas.datasets.images import ImageDatasetLimits
from openmaas.datasets.service import DatasetLimits, DatasetService
from openmaas.errors import InvalidRequest
from openmaas.evaluation.gate import AliasGate
from openmaas.images import ImageLimits
from openmaas.jobs.service import JobService
from openmaas.metering.audit import AuditLog
from openmaas.metering.usage import UsageRecorder
from openmaas.observability.build import build_labels
from openmaas.observability.metrics import Metrics
from openmaas.optimize.auto_onnx import AutoOnnx
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.composition import Registry
from openmaas.registry.intake import ArchiveLimits
from openmaas.registry.object_store import S3ArtifactStore
from openmaas.registry.sources import normalized_package_name
from openmaas.registry.traffic import TrafficSplit
from openmaas.serving.engine import InferenceEngine
from openmaas.serving.pool import check_fits_budget
from openmaas.settings import MiB, Settings
from openmaas.store.database import Database
from openmaas.training.kind import build_job_service


def build_keyring(settings: Settings) -> Keyring:
    """The artifact keys the settings name (none: a plaintext store); raises for a malformed
    key, so call it before opening anything."""
    return Keyring(key_from_settings(settings))


def build_artifact_store(settings: Settings, keys: Keyring | None = None) -> ArtifactStore:
    """The store the settings name: the local artifacts dir, or (OPENMAAS_ARTIFACTS_URL
    s3://...) the bucket, with a local cache of what this process reads."""
    keyring = keys if keys is not None else build_keyring(settings)
    if settings.artifacts_url is not None:
        return S3ArtifactStore(settings.artifacts_url, settings.artifact_cache_root, keyring)
    return ArtifactStore(settings.artifact_root, keyring)


def archive_limits(settings: Settings) -> ArchiveLimits:
    return ArchiveLimits(
        max_total_bytes=settings.max_extracted_bytes,
        max_members=settings.max_archive_members,
        project_storage_bytes=settings.project_storage_quota_bytes,
        max_hub_bytes=settings.max_hub_download_bytes,
    )


def allowed_package_sources(
    settings: Settings, catalog: Sequence[CatalogDefinition] | None = None
) -> frozenset[str]:
    """The installed packages a non-admin key may register from (spaCy or package sources):
    those the built-in catalog ships, and the operator's `allowed_package_sources`."""
    definitions = load_catalog() if catalog is None else catalog
    names = {
        name
        for definition in definitions
        for source in definition.sources
        if source.type == "pypi"
        for name in (source.distribution, source.package)
        if name
    }
    names.update(settings.allowed_package_sources)
    return frozenset(normalized_package_name(name) for name in names)


def build_registry(
    settings: Settings,
    *,
    db: Database | None = None,
    artifacts: ArtifactStore | None = None,
    allow_pickle: bool | None = None,
) -> Registry:
    """The registry over the settings' database and artifact store (or the ones given).

    A job worker passes `allow_pickle=False`: what a job registers is always in a safe
    format. Call `registry.start()` before registering; close `registry.db` when done.
    """
    catalog = load_catalog()
    return Registry.create(
        db or Database(settings.database_url),
        artifacts or build_artifact_store(settings),
        allow_pickle=settings.allow_pickle if allow_pickle is None else allow_pickle,
        limits=archive_limits(settings),
        allowed_packages=allowed_package_sources(settings, catalog),
        reserved_names=frozenset(definition.name for definition in catalog),
    )


def build_engine(registry: Registry, settings: Settings, metrics: Metrics) -> InferenceEngine:
    """The embedded engine, or with OPENMAAS_RAY_ADDRESS the one whose models run on Ray
    Serve. Ray is imported only then: embedded mode never loads it."""
    if not settings.ray_address:
        return InferenceEngine(registry, settings, metrics)
    try:
        from openmaas.scaleout.serve_engine import RayServeEngine
    except ModuleNotFoundError as missing:
        if missing.name is None or not missing.name.startswith("ray"):
            raise
        raise InvalidRequest(
            "OPENMAAS_RAY_ADDRESS is set but Ray Serve is not installed: "
            "pip install 'openmaas[ray]' (or unset it to serve in this process)",
            param="ray_address",
        ) from None
    return RayServeEngine(registry, settings, metrics)


@dataclass(slots=True)
class Services:
    """The long-lived services of one server process, built from settings and started once.

    Example::

        services = Services.build(settings)
        services.start()
        services.registry.list_models(caller=SYSTEM)
    """

    settings: Settings
    db: Database
    registry: Registry
    catalog: CatalogService
    metrics: Metrics
    engine: InferenceEngine
    auth: AuthService
    authenticator: Authenticator
    usage: UsageRecorder
    audit: AuditLog
    limits: Limits
    datasets: DatasetService
    jobs: JobService
    batches: BatchService
    batch_runner: BatchRunner

    @classmethod
    def build(cls, settings: Settings) -> Services:
        # First: a malformed key must stop the server before it opens anything.
        keys = build_keyring(settings)
        db = Database(settings.database_url)
        registry = build_registry(settings, db=db, artifacts=build_artifact_store(settings, keys))
        catalog = CatalogService(registry)
        metrics = Metrics()
        metrics.describe_build(build_labels(settings))
        engine = build_engine(registry, settings, metrics)
        # Uploads that could never load under the memory budget are refused at registration.
        registry.registration.load_check = functools.partial(
            check_fits_budget, budget_bytes=settings.memory_budget_mb * MiB
        )
        auth = AuthService(db, pepper=load_pepper(settings))
        guard = BruteForceGuard(
            settings.redis_url,
            failures_before_delay=settings.auth_failures_before_delay,
            failures_before_block=settings.auth_failures_before_block,
            block_s=settings.auth_block_s,
        )
        authenticator = Authenticator(
            auth,
            ttl_s=settings.auth_cache_ttl_s,
            guard=guard,
            admit_valid_keys_when_blocked=settings.auth_admit_valid_keys_when_blocked,
            clients=ClientAddresses(settings.trusted_proxies),
            on_verified=lambda outcome: metrics.auth_attempts.labels(outcome=outcome).inc(),
        )
        datasets = DatasetService(
            db,
            registry.artifacts,
            DatasetLimits(
                max_bytes=settings.max_dataset_mb * MiB,
                images=ImageDatasetLimits(
                    ImageLimits(settings.max_image_mb * MiB, settings.max_image_pixels),
                    archive_limits(settings),
                ),
            ),
        )
        batch_store = BatchStore(db)
        batch_kind = BatchJobKind(
            datasets=datasets,
            store=batch_store,
            keys=auth,
            concurrency=settings.batch_concurrency,
        )
        jobs = build_job_service(settings, db, registry, extra_kinds=[batch_kind])
        batch_runner = BatchRunner(
            batch_kind,
            jobs.queue,
            registry=registry,
            home=settings.home,
            heartbeat_s=settings.job_heartbeat_s,
            count=settings.batch_runners,
        )
        batches = BatchService(jobs, batch_store)
        batches.on_queued = batch_runner.wake
        # Alias moves under an evaluation gate score both versions first.
        registry.aliases.gate = AliasGate(
            registry, datasets, max_examples=settings.max_eval_examples
        )
        audit = AuditLog(db)
        # Fast by default: new encoders queue their ONNX variant (`optimize/auto_onnx.py`).
        AutoOnnx.install(settings, registry, jobs, audit)
        engine.rollout.on_rollback = functools.partial(end_rolled_back, registry, audit)
        return cls(
            settings=settings,
            db=db,
            registry=registry,
            catalog=catalog,
            metrics=metrics,
            engine=engine,
            auth=auth,
            authenticator=authenticator,
            usage=UsageRecorder(db, flush_s=settings.usage_flush_s),
            audit=audit,
            datasets=datasets,
            limits=Limits(RateLimiter(settings.redis_url)),
            jobs=jobs,
            batches=batches,
            batch_runner=batch_runner,
        )

    def start(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db.migrate()
        self.usage.start()
        self.registry.start()
        self.datasets.start()
        self.auth.check_pepper()  # before any key is made or imported under it
        admin_key = self.settings.admin_key
        created = self.auth.bootstrap_admin_key(
            admin_key.get_secret_value() if admin_key is not None else None, caller=SYSTEM
        )
        if admin_key is None:
            announce_admin_key(created, self.settings)
        if self.settings.catalog_autoregister:
            self.catalog.register_available()

    async def start_serving(self) -> None:
        """Start the inference engine (needs the event loop): preload models, idle reaper."""
        await self.engine.start()

    def start_batches(self, executor: LineExecutor) -> None:
        """Start the batch runners, which run batches' requests through `executor` (the
        app's in-process dispatch, once the app takes requests)."""
        self.batch_runner.start(executor)

    async def close_serving(self) -> None:
        # The runners finish the requests in flight (on this loop) and hand their batches
        # back, before the engine they use closes.
        await asyncio.to_thread(self.batch_runner.stop)
        await self.engine.close()
        await self.limits.close()
        if self.authenticator.guard is not None:
            await self.authenticator.guard.close()

    def close(self) -> None:
        self.usage.close()  # writes the usage still buffered
        self.db.close()


ROLLOUT_ACTOR = "system:rollout"


def end_rolled_back(
    registry: Registry,
    audit: AuditLog,
    split: TrafficSplit,
    reason: str,
    figures: Mapping[str, Any],
) -> None:
    """The serving side's automatic rollback: end the split (unless it changed meanwhile)
    and record why in the audit log, with the figures; the alias stays on its baseline."""
    if not registry.traffic.end_if(split, caller=SYSTEM):
        return
    audit.record(
        ROLLOUT_ACTOR,
        split.project,
        "alias.traffic.rollback",
        f"models/{split.model}/aliases/{split.alias}",
        before=split.to_dict(),
        after={"baseline": split.baseline, "reason": reason, "figures": dict(figures)},
    )
