"""One error hierarchy. Each class carries its HTTP status, OpenAI-style type and a stable code.

Services raise these; the API renders every one as
`{"error": {"message", "type", "param", "code"}}` with the class's status.

Example::

    raise ModelNotFound("model 'bert' not found", param="model")
"""

from __future__ import annotations

from collections.abc import Mapping


class OpenMaaSError(Exception):
    """Base of every error the platform raises on purpose."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = dict(headers or {})
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(OpenMaaSError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidName(InvalidRequest):
    code = "invalid_name"


class InvalidReference(InvalidRequest):
    code = "invalid_reference"


class UnsafeArtifact(InvalidRequest):
    """A file that could run code when loaded (a pickle), or an archive entry that escapes."""

    code = "unsafe_artifact"


class UnsupportedSource(InvalidRequest):
    code = "unsupported_source"


class TaskNotDetected(InvalidRequest):
    code = "task_not_detected"


class WrongTask(InvalidRequest):
    """The model exists but does not serve what the route asks of it. `task` names the task
    that was asked for, so the API layer can say which route needs which model."""

    code = "wrong_task"

    def __init__(self, message: str, *, param: str | None = None, task: str | None = None):
        super().__init__(message, param=param)
        self.task = task


class InputTooLong(InvalidRequest):
    """An input has more tokens than the model accepts and truncation is off."""

    code = "context_length_exceeded"


class InputTooLarge(InvalidRequest):
    """A text is past a limit on the work one item may cost (characters, sentences), which
    holds whether or not the request truncates: refused before it is batched."""

    code = "input_too_large"


class UnsupportedLanguage(InvalidRequest):
    code = "unsupported_language"


class PayloadTooLarge(OpenMaaSError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class NotFound(OpenMaaSError):
    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ModelUnloaded(NotFound):
    """A version unloaded on request is not loaded again by an inference request: it answers
    404 until it is loaded, as Triton answers for an unloaded model. `reference` is the
    version (`name:version`), for the API to say how to load it."""

    code = "model_unloaded"

    def __init__(self, message: str, *, reference: str) -> None:
        super().__init__(message, param="model")
        self.reference = reference


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class CatalogEntryNotFound(NotFound):
    code = "catalog_entry_not_found"


class Conflict(OpenMaaSError):
    status_code = 409
    error_type = "conflict_error"
    code = "conflict"


class NothingToRollBack(Conflict):
    code = "nothing_to_roll_back"


class GateFailed(Conflict):
    """An alias move whose candidate lost to the alias's current version on the alias's
    evaluation gate (`PUT …/aliases/{alias}/policy`)."""

    code = "gate_failed"


class ArtifactCorrupted(OpenMaaSError):
    """Stored files no longer match the manifest recorded at registration."""

    status_code = 500
    error_type = "server_error"
    code = "artifact_integrity_error"


class ObjectStoreError(OpenMaaSError):
    """The object store behind OPENMAAS_ARTIFACTS_URL is unusable (no bucket, no access, no
    client library): the operator's configuration, named with what to fix."""

    status_code = 503
    error_type = "server_error"
    code = "object_store_unavailable"


class Overloaded(OpenMaaSError):
    """A model's queue is full: retry after the given number of seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_seconds)})


class ModelLoadFailed(OpenMaaSError):
    """A model could not be loaded. The next request tries again."""

    status_code = 503
    error_type = "server_error"
    code = "model_load_failed"


class ReplicaLost(OpenMaaSError):
    """A model's replicas (Ray Serve) died under a request twice over, or mid-stream."""

    status_code = 503
    error_type = "server_error"
    code = "replica_lost"


class OptimizationFailed(OpenMaaSError):
    """An optimization job's result does not serve like its parent (outside the tolerance),
    or the export or quantization itself failed: the job fails with this message."""

    code = "optimization_failed"


class ModelNotLoaded(Conflict):
    code = "model_not_loaded"


class AuthenticationFailed(OpenMaaSError):
    """No usable API key: missing, malformed, unknown, wrong secret, revoked or expired.

    An unknown key and a wrong secret share one message and code, so a caller cannot probe
    which public prefixes exist.
    """

    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class PermissionDenied(OpenMaaSError):
    """A valid key without the scope the operation needs."""

    status_code = 403
    error_type = "permission_error"
    code = "insufficient_scope"


class MissingCaller(PermissionDenied):
    """A service was called without saying who calls. Access fails closed: code that lost
    its caller (a thread, a generator, another process) is refused, never treated as admin."""

    code = "missing_caller"


class ProjectNotFound(NotFound):
    code = "project_not_found"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class PepperMismatch(OpenMaaSError):
    """A server's key pepper is not the one its database's keys were made with: every key
    would be refused. Raised at start, never answered to a client."""

    code = "pepper_mismatch"

    def __init__(self) -> None:
        super().__init__(
            "this server's key pepper (OPENMAAS_KEY_PEPPER, else $OPENMAAS_HOME/secrets/pepper) "
            "is not the one the API keys in its database were made with, so it would refuse "
            "every key: give every server on one database the same OPENMAAS_KEY_PEPPER "
            "(docs/scaling.md, Several API replicas)"
        )


class CountersUnavailable(OpenMaaSError):
    """The shared store of rate-limit, quota and brute-force counters (OPENMAAS_REDIS_URL)
    did not answer in time: a retryable 503, not an answer the caller can act on."""

    status_code = 503
    error_type = "server_error"
    code = "limits_unavailable"

    def __init__(self, *, retry_after_seconds: int = 1) -> None:
        super().__init__(
            "the server could not reach its rate-limit store (OPENMAAS_REDIS_URL) in time; "
            "retry shortly",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class RateLimited(OpenMaaSError):
    """A requests- or tokens-per-minute limit is reached: retry after the given seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: int,
        headers: Mapping[str, str] | None = None,  # e.g. the x-ratelimit-* of the limit hit
    ) -> None:
        super().__init__(
            message,
            headers={"Retry-After": str(max(1, retry_after_seconds)), **(headers or {})},
        )


class QuotaExhausted(OpenMaaSError):
    """A daily or monthly quota is used up. `x-should-retry: false` stops the OpenAI clients'
    automatic retries; Retry-After says when the quota resets."""

    status_code = 429
    # What OpenAI answers for an exhausted quota, so its clients recognise it.
    error_type = "insufficient_quota"
    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(
            message,
            headers={
                "Retry-After": str(max(1, retry_after_seconds)),
                "x-should-retry": "false",
            },
        )


class TooManyAuthFailures(OpenMaaSError):
    """Too many failed API key attempts from one client address: refused for a while."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "too_many_auth_failures"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_seconds))})


class EncryptionKeyError(OpenMaaSError):
    """Artifacts encrypted at rest and the configured key do not fit. `code` says how:
    encryption_key_missing (encrypted files, no key), encryption_key_mismatch (another key),
    encryption_key_invalid (a malformed key or an unreadable key file)."""

    status_code = 500
    error_type = "server_error"
    code = "encryption_key_error"


class ModelTooLarge(OpenMaaSError):
    """A model needs more memory than the server's whole load budget (estimated from what its
    config declares, not from its file size): it can never be loaded here, so this is not a
    retryable 503. 507: the server cannot hold what the request needs."""

    status_code = 507
    error_type = "invalid_request_error"
    code = "model_too_large"
