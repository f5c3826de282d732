"""JSON request bodies decoded strictly: a string that is not Unicode text is refused.

`json.loads` turns the escape `"\\ud800"` (one half of a UTF-16 surrogate pair, alone) into a
Python string that no UTF-8 encoder takes: stored in a model's tags it made every listing that
showed the model answer 500, and sent to a tokenizer it raised a TypeError (issue 13). Every
router uses `StrictJSONRoute`, so such a body answers 400 before any route sees it.

Example::

    router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

# A \uD800-\uDFFF escape: only a body holding one can decode to a lone surrogate, so only
# those bodies are walked (a paired escape, as some encoders write emoji, is checked and kept).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def loads_strict(body: bytes) -> Any:
    """`json.loads`, refusing (with `json.JSONDecodeError`) strings holding lone surrogates."""
    value = json.loads(body)
    if _SURROGATE_ESCAPE.search(body) is not None:
        _check_text(value, body)
    return value


def _check_text(value: Any, body: bytes) -> None:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise json.JSONDecodeError(
                    f"a string holds a lone UTF-16 surrogate ({exc.object[exc.start]!r}); "
                    "send text as UTF-8, or escape a character outside the BMP as a pair",
                    body.decode("utf-8", "replace"),
                    0,
                ) from None


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose handler reads JSON bodies with `loads_strict`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
