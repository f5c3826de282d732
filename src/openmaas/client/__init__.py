"""The Python SDK: every admin call of an OpenMaaS server, with typed results.

A package of its own that imports nothing of the server: `Client` is composed of one module
per resource (`models`, `aliases`, `catalog`, `admin`, `datasets`, `jobs`, `batches`,
`metering`), over
`transport` (HTTP, errors) and `packing` (model directories to archives); the bodies it sends
and reads are the wire models of `openmaas.protocol`.

Example::

    from openmaas import APIError, Client
    from openmaas.client import SpacySource

    with Client("http://127.0.0.1:8000") as client:
        client.register("ner", SpacySource(package="en_core_web_sm"), alias="production")
        try:
            client.get_model("missing")
        except APIError as exc:
            print(exc.status_code, exc.code)  # 404 model_not_found
"""

from openmaas.client.client import DEFAULT_TIMEOUT, DEFAULT_URL, Client
from openmaas.client.models import ServerSource
from openmaas.client.packing import ProgressCallback, UploadProgress
from openmaas.client.transport import APIError, ConnectionFailed
from openmaas.protocol.catalog import CatalogEntryOut
from openmaas.protocol.registry import (
    HubSource,
    OnnxSource,
    PackageSource,
    PathSource,
    SpacySource,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "APIError",
    "CatalogEntryOut",
    "Client",
    "ConnectionFailed",
    "HubSource",
    "OnnxSource",
    "PackageSource",
    "PathSource",
    "ProgressCallback",
    "ServerSource",
    "SpacySource",
    "UploadProgress",
]
