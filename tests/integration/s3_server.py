"""A real S3 API server for the object-storage tests: moto's standalone server (PyPI
`moto[server]`) in a process of its own on a free loopback port, and a bucket in it.

Example::

    with running_s3_server(tmp_path) as s3:
        s3.create_bucket("artifacts")
        store = S3ArtifactStore("s3://artifacts/prod", cache, storage_options=s3.options)
        server = start_server(home, {**s3.env, "OPENMAAS_ARTIFACTS_URL": "s3://artifacts/prod"})
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.integration.conftest import free_port

STARTUP_TIMEOUT_S = 30.0
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        """What a server process needs to reach it: the usual AWS variables."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "openmaas-test",
            "AWS_SECRET_ACCESS_KEY": "openmaas-test-secret",
            "AWS_DEFAULT_REGION": REGION,
        }

    @property
    def options(self) -> dict[str, Any]:
        """The same as s3fs storage options (for stores built inside the test process)."""
        return {
            "endpoint_url": self.endpoint,
            "key": "openmaas-test",
            "secret": "openmaas-test-secret",
            "client_kwargs": {"region_name": REGION},
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="openmaas-test",
            aws_secret_access_key="openmaas-test-secret",
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def objects(self, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        """{key: object summary} of every object under `prefix`."""
        found: dict[str, dict[str, Any]] = {}
        pages = self.client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = item
        return found


@contextmanager
def running_s3_server(log_dir: Path) -> Iterator[S3Server]:
    port = free_port()
    with (log_dir / f"moto-{port}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited with {process.returncode}")
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield S3Server(endpoint)
    finally:
        process.terminate()
        process.wait(timeout=10)


def bucket_fixture(bucket: str) -> Any:
    """A module-scoped pytest fixture: a moto server holding the empty bucket `bucket`.

    Example::

        s3 = bucket_fixture("artifacts")  # at a test module's top level
    """

    @pytest.fixture(scope="module")
    def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
        with running_s3_server(tmp_path_factory.mktemp("moto")) as server:
            server.create_bucket(bucket)
            yield server

    return s3
