"""Images on `/v1/classify`: OpenAI `image_url` content parts carrying data URLs, and
multipart uploads.

A multipart request (`model`, one or more `file` parts, optional `top_k`) is read as the JSON
body it stands for, each file becoming an image part with a data URL, before the route sees
it (`ImageUploadRoute`): one validation path and one route for both. Image URLs that are not
data URLs are refused: the server fetches nothing on a caller's behalf.

Example::

    images = image_bytes(body.images())  # [b"\\x89PNG...", ...]
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import orjson
from fastapi import Request, Response
from starlette.datastructures import UploadFile
from starlette.types import Message

from openmaas.api.json_body import StrictJSONRoute
from openmaas.errors import InvalidRequest
from openmaas.protocol.tasks import ImagePart

# data:[<media type>][;base64],<data>
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*),", re.ASCII)
MULTIPART_FIELDS = ("model", "top_k", "file")
# A multipart request's files: more would exceed any batch a request should carry.
MAX_UPLOADED_FILES = 256

# The multipart form of /v1/classify, added to the OpenAPI beside the JSON body.
MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model", "file"],
                    "properties": {
                        "model": {"type": "string"},
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more image files (PNG, JPEG, ...).",
                        },
                        "top_k": {"type": "integer", "minimum": 1},
                    },
                }
            }
        }
    }
}


def image_bytes(parts: Sequence[ImagePart]) -> list[bytes]:
    """The encoded image of each part's data URL; InvalidRequest names `input[i]`."""
    return [_data_url_bytes(part.image_url.url, f"input[{i}]") for i, part in enumerate(parts)]


def _data_url_bytes(url: str, what: str) -> bytes:
    match = _DATA_URL.match(url)
    if match is None:
        scheme = url.split(":", 1)[0] if ":" in url[:16] else "no scheme"
        raise InvalidRequest(
            f"{what}: image_url.url is not a data URL ({scheme}); send the image inline as "
            "data:image/png;base64,... (this server fetches no URLs) or upload it as "
            "multipart/form-data",
            param="input",
            code="invalid_image",
        )
    media_type = match.group("type")
    if media_type is not None and not media_type.lower().startswith("image/"):
        raise InvalidRequest(
            f"{what}: the data URL's media type is {media_type}, not an image/* type",
            param="input",
            code="invalid_image",
        )
    if "base64" not in match.group("params").lower().split(";"):
        raise InvalidRequest(
            f"{what}: the data URL is not base64-encoded; write data:image/png;base64,...",
            param="input",
            code="invalid_image",
        )
    try:
        return base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"{what}: the data URL's payload is not valid base64",
            param="input",
            code="invalid_image",
        ) from None


async def _form_as_json(request: Request) -> bytes:
    """The JSON body a multipart /v1/classify request stands for."""
    try:
        form = await request.form(max_files=MAX_UPLOADED_FILES, max_fields=16)
    except Exception as exc:
        raise InvalidRequest(
            f"the multipart body could not be read ({exc})", param="file"
        ) from None
    try:
        unknown = sorted({key for key in form if key not in MULTIPART_FIELDS})
        if unknown:
            raise InvalidRequest(
                f"unknown form field {unknown[0]!r}; send {', '.join(MULTIPART_FIELDS)}",
                param=unknown[0],
            )
        body: dict[str, Any] = {}
        model = form.get("model")
        if isinstance(model, str):
            body["model"] = model
        top_k = form.get("top_k")
        if isinstance(top_k, str):
            body["top_k"] = int(top_k) if top_k.strip().isdigit() else top_k
        parts = []
        for index, value in enumerate(form.getlist("file")):
            if not isinstance(value, UploadFile):
                raise InvalidRequest(
                    f"file[{index}] is a text field; send the image as a file part",
                    param="file",
                )
            data = await value.read()
            url = "data:;base64," + base64.b64encode(data).decode("ascii")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        if not parts:
            raise InvalidRequest(
                "send at least one image as a file part named 'file'", param="file"
            )
        body["input"] = parts
        return orjson.dumps(body)
    finally:
        await form.close()


class ImageUploadRoute(StrictJSONRoute):
    """A route that also takes multipart uploads of images, read as image content parts."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def upload_handler(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if not content_type.lower().startswith("multipart/form-data"):
                return await handler(request)
            body = await _form_as_json(request)
            headers = [
                (name, value)
                for name, value in request.scope["headers"]
                if name not in (b"content-type", b"content-length")
            ]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            delivered = False

            async def receive() -> Message:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await request.receive()

            return await handler(Request({**request.scope, "headers": headers}, receive))

        return upload_handler
