"""HTTP errors: OpenAI's error body, and the mapping of engine and store errors onto status codes."""

from __future__ import annotations

import sys

from fastapi.responses import JSONResponse

from adapters.server.batcher import Overloaded


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def invalid(message: str, code: str = "invalid_request", param: str | None = None) -> APIError:
    return APIError(422, message, "invalid_request_error", code, param)


def not_found(message: str, code: str = "model_not_found") -> APIError:
    return APIError(404, message, "not_found_error", code, "model")


def error_json(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
               headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def translate(exc: BaseException) -> APIError:
    """Map an engine or store error onto an HTTP error."""
    from adapters.errors import UsageError
    from adapters.inference import BaseMismatchError
    from store.errors import (
        AmbiguousRef,
        IntegrityError,
        InvalidName,
        RefNotFound,
        StoreError,
    )

    if isinstance(exc, APIError):
        return exc
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    hint = getattr(exc, "hint", None)
    if hint:
        message = f"{message} ({hint})"
    runtime = _runtime()
    if isinstance(exc, Overloaded) or (runtime and isinstance(exc, runtime.CacheFullError)):
        return APIError(503, message, "overloaded_error", "overloaded")
    if isinstance(exc, BaseMismatchError):
        return APIError(409, message, "conflict_error", "base_mismatch", "model")
    if (runtime and isinstance(exc, runtime.UnknownAdapterError)) or isinstance(exc, (RefNotFound, InvalidName)):
        return not_found(message)
    if isinstance(exc, AmbiguousRef):
        return invalid(message, "ambiguous_ref", "model")
    if isinstance(exc, IntegrityError):
        return APIError(500, message, "server_error", "integrity_error")
    if isinstance(exc, (UsageError, StoreError, ValueError)):
        return invalid(message)
    return APIError(500, f"internal error: {type(exc).__name__}: {message}", "server_error", "internal_error")


def _runtime():
    # Looked up, not imported: the runtime (and torch) may not be loaded in this process.
    return sys.modules.get("adapters.runtime")
