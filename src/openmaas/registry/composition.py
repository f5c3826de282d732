"""The registry as one value: its store, aliases, registration and files, built together.

Callers reach each part by name (`registry.aliases.move(...)`, `registry.files.verify(...)`);
the reads the engine and the job services make on every request or job (`resolve`,
`get_model`, `get_version`, `list_models`, `open_files`) are here as well, in one place.

Example::

    registry = Registry.create(db, ArtifactStore(root), allow_pickle=False, limits=limits)
    registry.start()
    v = registry.registration.register_plan(
        "minilm", plan_directory(Path("all-MiniLM-L6-v2")), VersionSpec(), caller=SYSTEM
    )
    registry.aliases.move("minilm", "production", v.version, caller=SYSTEM, reason="first")
    registry.resolve("minilm", caller=SYSTEM).version  # -> 1
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from openmaas.auth.entities import Principal
from openmaas.registry.aliases import AliasService
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.entities import ModelVersion, RegisteredModel, VersionPin
from openmaas.registry.files import ModelFiles, OpenedVersion
from openmaas.registry.intake import ArchiveLimits
from openmaas.registry.names import qualified
from openmaas.registry.registration import RegistrationService
from openmaas.registry.store import RegistryStore
from openmaas.registry.traffic import TrafficService
from openmaas.registry.variants import VariantService
from openmaas.store.database import Database


@dataclass(frozen=True, slots=True)
class Registry:
    """The registry services over one database and one artifact store.

    Example::

        registry = Registry.create(db, artifacts, allow_pickle=False, limits=limits)
        registry.store.list_versions("minilm", caller=principal)
    """

    store: RegistryStore
    aliases: AliasService
    registration: RegistrationService
    files: ModelFiles
    traffic: TrafficService
    variants: VariantService

    @classmethod
    def create(
        cls,
        db: Database,
        artifacts: ArtifactStore,
        *,
        allow_pickle: bool,
        limits: ArchiveLimits,
        allowed_packages: Collection[str] = (),
        reserved_names: Collection[str] = (),
    ) -> Registry:
        store = RegistryStore(db, artifacts)
        aliases = AliasService(store)
        registration = RegistrationService(
            store,
            artifacts,
            allow_pickle=allow_pickle,
            limits=limits,
            allowed_packages=allowed_packages,
            reserved_names=reserved_names,
        )
        registration.aliases = aliases  # registrations' gated alias moves
        return cls(
            store=store,
            aliases=aliases,
            registration=registration,
            files=ModelFiles(store, aliases, artifacts),
            traffic=TrafficService(store),
            variants=VariantService(store, artifacts),
        )

    @property
    def db(self) -> Database:
        return self.store.db

    @property
    def artifacts(self) -> ArtifactStore:
        return self.files.artifacts

    def start(self) -> None:
        """Open the artifact store and sweep what interrupted registrations left behind."""
        self.files.start()

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(model_name)` after any change to what a reference of that model
        resolves to (new version, alias change, deletion). The serving router uses it."""
        self.store.add_listener(listener)

    # -- the reads serving and jobs make -------------------------------------------------

    def resolve(self, reference: str, *, caller: Principal) -> ModelVersion:
        """`name` (alias production, else newest), `name@alias` or `name:version`."""
        return self.aliases.resolve(reference, caller=caller)

    def get_model(self, name: str, *, caller: Principal) -> RegisteredModel:
        return self.store.get_model(name, caller=caller)

    def get_version(self, name: str, version: int, *, caller: Principal) -> ModelVersion:
        return self.store.get_version(name, version, caller=caller)

    def list_models(self, *, caller: Principal) -> list[RegisteredModel]:
        return self.store.list_models(caller=caller)

    def open_files(
        self, reference: str, *, caller: Principal, verify: bool = True
    ) -> OpenedVersion:
        """A version's files as plaintext on disk, hash-checked; close it when loaded."""
        return self.files.open(reference, caller=caller, verify=verify)

    def pin(self, reference: str, *, caller: Principal) -> VersionPin:
        """The version `reference` resolves to for `caller`, pinned by id and digest."""
        version = self.resolve(reference, caller=caller)
        exact = qualified(version.project, version.model)
        return self.store.pin(exact, version.version, caller=caller)

    def open_pinned(
        self, pin: VersionPin, *, caller: Principal, verify: bool = True
    ) -> OpenedVersion:
        """Exactly the pinned version's files, if it exists and `caller` may see it."""
        return self.files.open_pinned(pin, caller=caller, verify=verify)
