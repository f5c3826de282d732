"""`Client`: one OpenMaaS server, every resource's calls on one object.

Example::

    from openmaas import APIError, Client
    from openmaas.client import SpacySource

    with Client("http://127.0.0.1:8000") as client:
        v1 = client.upload("sentiment", "models/sentiment", metrics={"acc": 0.91})
        client.register("ner", SpacySource(package="en_core_web_sm"), alias="production")
        client.set_alias("sentiment", "production", v1.version, reason="first release")
        print(client.resolve("sentiment@production").reference)  # sentiment:1
        try:
            client.get_model("missing")
        except APIError as exc:
            print(exc.status_code, exc.code)  # 404 model_not_found
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self

import httpx

from openmaas.client.admin import AdminResource
from openmaas.client.aliases import AliasesResource
from openmaas.client.batches import BatchesResource
from openmaas.client.catalog import CatalogResource
from openmaas.client.datasets import DatasetsResource
from openmaas.client.evaluations import EvaluationsResource
from openmaas.client.explanations import ExplanationsResource
from openmaas.client.jobs import JobsResource
from openmaas.client.metering import MeteringResource
from openmaas.client.models import ModelsResource
from openmaas.client.optimization import OptimizationResource
from openmaas.client.transport import DEFAULT_MAX_RETRIES

DEFAULT_URL = "http://127.0.0.1:8000"
# Generous on purpose: registration and verification hash every file on the server before
# the response comes, which takes a while for multi-gigabyte models.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)


class Client(
    ModelsResource,
    AliasesResource,
    CatalogResource,
    AdminResource,
    DatasetsResource,
    JobsResource,
    OptimizationResource,
    EvaluationsResource,
    BatchesResource,
    MeteringResource,
    ExplanationsResource,
):
    """A synchronous client for one OpenMaaS server; use it as a context manager.

    `base_url` defaults to `OPENMAAS_URL`, else `http://127.0.0.1:8000`; `api_key` to
    `OPENMAAS_API_KEY` (both read when the client is made, as the CLI reads them). The key
    is sent as `Authorization: Bearer <key>`. `429`, `408` and `5xx` answers and
    failed connections are retried up to `max_retries` times (default 2, as the `openai`
    client does) with exponential backoff, honouring `Retry-After` and `x-should-retry`
    (see `client.transport`); `max_retries=0` sends every request once. Every non-2xx answer
    left raises `APIError`; a server that cannot be reached raises `ConnectionFailed`::

        with Client("http://127.0.0.1:8000", api_key="sk-...") as client:
            for model in client.list_models():
                print(model.name, model.latest_version, model.aliases)
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
        if base_url is None:
            base_url = os.environ.get("OPENMAAS_URL") or DEFAULT_URL
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        api_key = api_key if api_key is not None else os.environ.get("OPENMAAS_API_KEY")
        headers = {"User-Agent": "openmaas-python"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
