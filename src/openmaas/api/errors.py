"""One place that turns every failure into `{"error": {message, type, param, code}}`.

Open Inference Protocol (`/v2/...`) clients read `{"error": "<message>"}` instead (tritonclient
shows that string), so errors under `/v2` are rendered in that shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from limits.errors import StorageError
from starlette.exceptions import HTTPException as StarletteHTTPException

from openmaas.errors import CountersUnavailable, ModelUnloaded, OpenMaaSError, WrongTask

logger = logging.getLogger("openmaas.api")

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(
    message: str, error_type: str, code: str, param: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def _respond(
    request: Request,
    body: dict[str, object],
    status_code: int,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    path = request.url.path
    if path == "/v2" or path.startswith("/v2/"):
        error = body.get("error")
        body = {"error": error.get("message") if isinstance(error, dict) else error}
    return JSONResponse(body, status_code=status_code, headers=headers)


# Which routes serve each task, for a model of the wrong task: the engine knows no routes.
_TASK_ROUTES: dict[str, str] = {
    "embedding": "/v1/embeddings needs an embedding model",
    "text-classification": "/v1/classify with texts and /v1/moderations need a "
    "text-classification model (an image-classification model takes images)",
    "token-classification": "/v1/ner needs a token-classification model",
    "rerank": "/v1/rerank needs an embedding model or a cross-encoder",
    "text-generation": "chat and completions need a text-generation model",
    "translation": "/v1/translate needs a translation model",
    "summarization": "/v1/summarize needs a summarization model",
    "speech-recognition": "/v1/audio/transcriptions and /v1/audio/translations need a "
    "speech-recognition model",
    "explanation": "/v1/explain with a text needs a text-classification or "
    "token-classification model (an image-classification model takes an image)",
    "image-explanation": "/v1/explain with an image (an image_url content part) needs an "
    "image-classification model",
    "image-classification": "/v1/classify with images (image_url content parts or uploaded "
    "files) needs an image-classification model",
}


def route_hint(task: str) -> str:
    return _TASK_ROUTES.get(task, f"this route needs a {task} model")


def load_hint(reference: str) -> str:
    """How to serve a version held unloaded (`ModelUnloaded`): the engine knows no routes."""
    return (
        f"load it with POST /v2/repository/models/{reference}/load (tritonclient: "
        f"load_model), or serve with OPENMAAS_RELOAD_UNLOADED=true to load unloaded models "
        "on their next request"
    )


async def handle_openmaas_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenMaaSError)
    if exc.status_code >= 500:
        logger.error("request %s failed: %s", _request_id(request), exc.message)
    body = exc.to_dict()
    if isinstance(exc, WrongTask) and exc.task is not None:
        message = f"{exc.message}; {route_hint(exc.task)}"
        body = error_body(message, exc.error_type, exc.code, exc.param)
    elif isinstance(exc, ModelUnloaded):
        message = f"{exc.message}; {load_hint(exc.reference)}"
        body = error_body(message, exc.error_type, exc.code, exc.param)
    return _respond(request, body, exc.status_code, exc.headers or None)


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    if not location and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        message = "request body must be a JSON object (send Content-Type: application/json)"
    elif first.get("type") == "json_invalid":
        param = None  # the location is a character offset, not a field
        message = "request body is not valid JSON: " + str(first.get("ctx", {}).get("error", ""))
    else:
        detail = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        message = f"{param or 'request'}: {detail}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return _respond(
        request, error_body(message, "invalid_request_error", "invalid_request", param), 400
    )


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    else:
        message = str(exc.detail)
    code = "route_not_found" if status == 404 else f"http_{status}"
    return _respond(
        request,
        error_body(message, _HTTP_TYPES.get(status, "server_error"), code),
        status,
        getattr(exc, "headers", None),
    )


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = _request_id(request)
    logger.exception("request %s failed with an unexpected error", request_id, exc_info=exc)
    return _respond(
        request,
        error_body(
            f"internal server error; quote request id {request_id} when reporting it",
            "server_error",
            "internal_error",
        ),
        500,
        {"X-Request-Id": request_id},
    )


async def handle_storage_error(request: Request, exc: Exception) -> JSONResponse:
    """The rate-limit store failed after the request was admitted (its token count, a
    quota's charge): a retryable 503, as a refusal at the door is."""
    logger.warning("rate-limit store unavailable: %s", exc)
    return await handle_openmaas_error(request, CountersUnavailable())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OpenMaaSError, handle_openmaas_error)
    app.add_exception_handler(StorageError, handle_storage_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected_error)
