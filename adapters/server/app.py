"""The HTTP server: an OpenAI-compatible API over one ``adapters.runtime.Engine``.

``model`` in a request is an adapter's store ref (loaded on first use when not resident) or the
base's name (the bare base). Adapters are named by store ref only, never by a filesystem path: the
server resolves refs through the store, re-hashing the files before a load.

    app = create_app(engine, api_key="...", limits=Limits(max_tokens=256), store_root=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import hmac
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.server.errors import APIError, error_json, translate
from adapters.server.handlers import Server
from adapters.server.limits import Limits
from adapters.server.metrics import CONTENT_TYPE_LATEST, Metrics
from adapters.server.refs import looks_like_path, store_resolver
from adapters.server.schemas import (
    AdapterRequest,
    AdapterStatus,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ClassifyRequest,
    ClassifyResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    Health,
    ModelList,
)

__all__ = ["Limits", "create_app", "looks_like_path", "store_resolver"]


ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in [
    (401, "missing or wrong API key"), (404, "unknown adapter or model"), (409, "adapter trained on another base"),
    (422, "invalid request"), (503, "overloaded")]}
# With stream=true: server-sent events; in OpenAPI 3.1 `schema` describes one event.
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string", "description": "one JSON chunk (OpenAI's chunk format), or [DONE] last"},
    "event": {"type": "string"}, "id": {"type": "string"}}}
SSE = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
             "description": "the response, or with stream=true server-sent events"}}


def create_app(engine, *, api_key: str | None = None, limits: Limits | None = None,
               store_root: str | Path | None = None, served_name: str | None = None,
               metrics: Metrics | None = None) -> FastAPI:
    """An app serving ``engine``. ``served_name`` is the base's model name (default: a built-in's
    name, else the directory's name); the base's full id is accepted as well."""
    server = Server(engine, limits or Limits(), store_root, served_name, metrics or Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title="adapters serve", version="1", lifespan=lifespan,
                  description="OpenAI-compatible serving of many adapters on one resident base.")
    app.state.server = server

    app.add_middleware(Gate, server=server, api_key=api_key or None)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        if exc.status == 503:
            server.metrics.overloaded.inc()
        return error_json(exc.status, exc.message, exc.type, exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_json(422, "the request body is not valid JSON", "invalid_request_error", "invalid_json")
        parts = []
        for e in errors[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
        first = errors[0].get("loc", ()) if errors else ()
        param = ".".join(str(x) for x in first if x != "body") or None
        return error_json(422, "; ".join(parts) or "invalid request", "invalid_request_error", "invalid_request",
                          param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (not UTF-8, bad form data)
            return error_json(422, f"the request body cannot be parsed: {exc.detail}", "invalid_request_error",
                              "invalid_json")
        kind = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}.get(
            exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error")
        return error_json(exc.status_code, str(exc.detail), kind, None, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        err = translate(exc)
        return error_json(err.status, err.message, err.type, err.code, err.param)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses={**ERRORS, **SSE})
    async def chat_completions(body: ChatCompletionRequest):
        return await server.chat(body)

    @app.post("/v1/completions", response_model=CompletionResponse, responses={**ERRORS, **SSE})
    async def completions(body: CompletionRequest):
        return await server.complete(body)

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS)
    async def classify(body: ClassifyRequest):
        return await server.classify(body)

    @app.get("/v1/models", response_model=ModelList, responses={401: ERRORS[401]})
    async def models():
        return await server.models()

    @app.post("/v1/adapters/load", response_model=AdapterStatus, responses=ERRORS)
    async def load_adapter(body: AdapterRequest):
        return await server.load(body.adapter)

    @app.post("/v1/adapters/unload", response_model=AdapterStatus, responses=ERRORS)
    async def unload_adapter(body: AdapterRequest):
        return await server.unload(body.adapter)

    @app.get("/health", response_model=Health, responses={503: ERRORS[503]})
    async def health():
        h = server.health()
        return JSONResponse(h.model_dump(), status_code=200 if h.status == "ok" else 503)

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus"}})
    async def metrics_endpoint():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


class Gate:
    """ASGI middleware: bearer auth on /v1 when a key is set, and request metrics (status code and
    latency to the response's first byte, labelled by route template)."""

    def __init__(self, app, server: "Server", api_key: str | None):
        self.app, self.server, self.key = app, server, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        if self.key and scope["path"].startswith("/v1") and not self._authorized(scope):
            response = error_json(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                  "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            self.server.count(scope, 401, time.monotonic() - started)
            return await response(scope, receive, send)
        seen = {"status": None}

        async def observed(message):
            if message["type"] == "http.response.start" and seen["status"] is None:
                seen["status"] = message["status"]
                self.server.count(scope, message["status"], time.monotonic() - started)
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            if seen["status"] is None:
                self.server.count(scope, 500, time.monotonic() - started)

    def _authorized(self, scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key.encode())
        return False
