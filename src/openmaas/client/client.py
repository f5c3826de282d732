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
from openmaas.client.catalog import CatalogResource
from openmaas.client.datasets import DatasetsResource
from openmaas.client.jobs import JobsResource
from openmaas.client.metering import MeteringResource
from openmaas.client.models import ModelsResource

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
    MeteringResource,
):
    """A synchronous client for one OpenMaaS server; use it as a context manager.

    `api_key` is sent as `Authorization: Bearer <key>`. Every non-2xx answer raises
    `APIError`; a server that cannot be reached raises `ConnectionFailed`::

        with Client("http://127.0.0.1:8000", api_key="sk-...") as client:
            for model in client.list_models():
                print(model.name, model.latest_version, model.aliases)
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
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
