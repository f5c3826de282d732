"""Server settings: read once at start from `OPENMAAS_*` environment variables, passed explicitly.

Example::

    settings = Settings(home=Path("state"), catalog_autoregister=False)
    app = build_app(settings)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the server. Environment variables use the `OPENMAAS_` prefix."""

    model_config = SettingsConfigDict(env_prefix="OPENMAAS_", extra="ignore")

    home: Path = Field(default=Path(".openmaas"), description="Root of all server state.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means SQLite at $OPENMAAS_HOME/openmaas.db.",
    )
    artifacts_dir: Path | None = Field(
        default=None, description="Artifact root; default $OPENMAAS_HOME/artifacts."
    )
    host: str = "127.0.0.1"
    port: int = 8000

    allow_pickle: bool = Field(
        default=False,
        description="Accept pickle-based weight files (.bin/.pt pickles, .pkl, .joblib). "
        "Pickles run code when loaded: enable only for models you trust.",
    )
    max_upload_mb: int = Field(default=4096, ge=1, description="Largest accepted upload body.")
    max_extracted_mb: int = Field(
        default=8192, ge=1, description="Largest total size of an unpacked archive."
    )
    max_archive_members: int = Field(default=20_000, ge=1)
    catalog_autoregister: bool = Field(
        default=True, description="Register available built-in catalog models on start."
    )
    log_level: str = "info"

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'openmaas.db').as_posix()}"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.home / "artifacts"
        return self

    @property
    def artifact_root(self) -> Path:
        assert self.artifacts_dir is not None  # filled by the validator
        return self.artifacts_dir

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * MiB

    @property
    def max_extracted_bytes(self) -> int:
        return self.max_extracted_mb * MiB
