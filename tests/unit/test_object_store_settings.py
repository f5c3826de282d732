"""OPENMAAS_ARTIFACTS_URL chooses the artifact store by its scheme: an s3:// URL gives the
bucket-backed store over a local cache, a worker inherits both, anything else is refused
with the forms that work. (The store itself runs against a real S3 API server in
tests/integration/test_s3_store.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from openmaas.jobs.worker_env import worker_environment
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.object_store import S3ArtifactStore
from openmaas.settings import Settings
from openmaas.wiring import build_artifact_store


def test_an_s3_url_builds_the_bucket_store_over_a_cache_in_the_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", artifacts_url="s3://models/prod/")
    assert settings.artifacts_url == "s3://models/prod"
    store = build_artifact_store(settings)
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.base) == ("models", "models/prod")
    assert store.root == tmp_path / "home" / "artifact-cache"


def test_without_a_url_the_local_directory_store_stays(tmp_path: Path) -> None:
    store = build_artifact_store(Settings(home=tmp_path))
    assert type(store) is ArtifactStore
    assert store.root == tmp_path / "artifacts"


def test_a_worker_inherits_the_bucket_and_its_cache(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, artifacts_url="s3://models", artifact_cache_dir=Path("cache")
    )
    env = worker_environment(settings, {})
    assert env["OPENMAAS_ARTIFACTS_URL"] == "s3://models"
    assert env["OPENMAAS_ARTIFACT_CACHE_DIR"] == str(Path.cwd() / "cache")


@pytest.mark.parametrize("url", ["gs://bucket/x", "s3://", "/var/artifacts"])
def test_other_urls_are_refused_with_the_forms_that_work(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"s3://BUCKET or s3://BUCKET/PREFIX"):
        Settings(home=tmp_path, artifacts_url=url)
