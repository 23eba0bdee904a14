"""HTTP errors: OpenAI's error body, and the mapping of engine and store errors onto status codes.

Filesystem paths never leave the server: every error message goes through ``redact``, which keeps
only the last part of an absolute path (a file's or a folder's name), so a client learns which
file is wrong but not where the store, the base or the home directory lie.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.server.batcher import Overloaded


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def invalid(message: str, code: str = "invalid_request", param: str | None = None) -> APIError:
    return APIError(422, message, "invalid_request_error", code, param)


def not_found(message: str, code: str = "model_not_found") -> APIError:
    return APIError(404, message, "not_found_error", code, "model")


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body is read (an HTTPException, so FastAPI passes it on as it is)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over this server's limit of {limit} bytes; send fewer or "
                              "shorter inputs per request (the limit is the server's max_body_bytes)")
        self.error_code = "body_too_large"


# An absolute path (POSIX, '~' or a drive letter) with at least one folder before its last part.
_ABSOLUTE = re.compile(r"(?<![\w.:/~\\-])(?:~|[A-Za-z]:)?[/\\](?:[^\s/\\'\"`]+[/\\])+(?=[^\s/\\'\"`])")


def redact(value: Any) -> Any:
    """``value`` (a string, or lists and dicts of them) with absolute paths cut to their last part."""
    if isinstance(value, str):
        return _ABSOLUTE.sub("…/", value) if ("/" in value or "\\" in value) else value
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _text(value: str | None) -> str | None:
    # A lone surrogate cannot be encoded as UTF-8: never let one break the error response itself.
    return None if value is None else redact(value).encode("utf-8", "replace").decode("utf-8")


def error_json(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
               headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": _text(message), "type": type_, "code": code, "param": _text(param)}}
    return JSONResponse(body, status_code=status, headers=headers)


def translate(exc: BaseException) -> APIError:
    """Map an engine or store error onto an HTTP error."""
    from adapters.errors import BaseMismatchError, UsageError
    from adapters_store.errors import (
        AmbiguousRef,
        DamagedIndex,
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
    message = redact(message)
    runtime = _runtime()
    if isinstance(exc, Overloaded) or (runtime and isinstance(exc, runtime.CacheFullError)):
        return APIError(503, message, "overloaded_error", "overloaded")
    if isinstance(exc, BaseMismatchError):
        return APIError(409, message, "conflict_error", "base_mismatch", "model")
    if (runtime and isinstance(exc, runtime.UnknownAdapterError)) or isinstance(exc, (RefNotFound, InvalidName)):
        return not_found(message)
    if isinstance(exc, AmbiguousRef):
        return invalid(message, "ambiguous_ref", "model")
    if isinstance(exc, DamagedIndex):  # the server's store, not the request: retry once it is repaired
        return APIError(503, message, "server_error", "store_damaged")
    if isinstance(exc, IntegrityError):
        return APIError(500, redact(message), "server_error", "integrity_error")
    if isinstance(exc, OverflowError):  # a number in the request too large for the store's index
        return invalid(f"a number in the request is too large: {redact(message)}", "invalid_request")
    if isinstance(exc, (UsageError, StoreError, ValueError)):
        return invalid(redact(message))
    return APIError(500, f"internal error: {type(exc).__name__}: {redact(message)}", "server_error",
                    "internal_error")


def _runtime():
    # Looked up, not imported: the runtime (and torch) may not be loaded in this process.
    return sys.modules.get("adapters.runtime")
