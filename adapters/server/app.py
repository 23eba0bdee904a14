"""The HTTP server: an OpenAI-compatible API over one ``adapters.runtime.Engine``.

``model`` in a request is an adapter's store ref (loaded on first use when not resident) or the
base's name (the bare base). Adapters are named by store ref only, never by a filesystem path: the
server resolves refs through the store, re-hashing the files before a load.

    app = create_app(engine, api_key="...", limits=Limits(max_tokens=256), store_root=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Before a request reaches a route, ``Gate`` checks the Host header (see ``hosts.py``), the API key
and the body size (from Content-Length, then counted as the body streams in), so a refused request
costs no parsing and no engine time, and the event loop stays free for other clients.
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

from adapters.pathlike import looks_like_path
from adapters.runtime.resolvers import store_resolver
from adapters.server.errors import APIError, BodyTooLarge, error_json, translate
from adapters.server.handlers import Server
from adapters.server.hosts import HostCheck
from adapters.server.limits import Limits
from adapters.server.prometheus import CONTENT_TYPE_LATEST, Metrics
from adapters.server.schemas import (
    AdapterRequest,
    AdapterStatus,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ClassifyRequest,
    ClassifyResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorResponse,
    Health,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
)

__all__ = ["Limits", "create_app", "looks_like_path", "store_resolver"]


ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in [
    (400, "a Host header this server does not answer"), (401, "missing or wrong API key"),
    (404, "unknown adapter or model"), (409, "adapter trained on another base"),
    (413, "request body over the server's max_body_bytes"), (422, "invalid request"), (503, "overloaded")]}
GET_ERRORS = {code: ERRORS[code] for code in (400, 401)}
# With stream=true: server-sent events; in OpenAPI 3.1 `schema` describes one event.
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string", "description": "one JSON chunk (OpenAI's chunk format), or [DONE] last"},
    "event": {"type": "string"}, "id": {"type": "string"}}}
SSE = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
             "description": "the response, or with stream=true server-sent events"}}


def create_app(engine, *, api_key: str | None = None, limits: Limits | None = None,
               store_root: str | Path | None = None, served_name: str | None = None,
               metrics: Metrics | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    """An app serving ``engine``. ``served_name`` is the base's model name (default: a built-in's
    name, else the directory's name); the base's full id is accepted as well. ``allowed_hosts``:
    the Host header values answered (default: loopback names when bound to a loopback address,
    else any; ``["*"]``: any)."""
    limits = limits or Limits()
    server = Server(engine, limits, store_root, served_name, metrics or Metrics())

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

    app.add_middleware(Gate, server=server, api_key=api_key or None, hosts=HostCheck(allowed_hosts),
                       max_body_bytes=limits.max_body_bytes)

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
        message, code, param = validation_message(errors)
        return error_json(422, message, "invalid_request_error", code, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (not UTF-8, bad form data)
            return error_json(422, f"the request body cannot be parsed: {exc.detail}", "invalid_request_error",
                              "invalid_json")
        kind = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}.get(
            exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error")
        return error_json(exc.status_code, str(exc.detail), kind, getattr(exc, "error_code", None),
                          headers=getattr(exc, "headers", None))

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

    @app.get("/v1/models", response_model=ModelList, responses=GET_ERRORS)
    async def models():
        return await server.models()

    @app.post("/v1/adapters/load", response_model=AdapterStatus, responses=ERRORS)
    async def load_adapter(body: AdapterRequest):
        return await server.load(body.adapter)

    @app.post("/v1/adapters/unload", response_model=AdapterStatus, responses=ERRORS)
    async def unload_adapter(body: AdapterRequest):
        return await server.unload(body.adapter)

    # The base's tokenizer, at the paths vLLM serves it (lm-evaluation-harness's remote tokenizer).
    @app.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
    async def tokenize(body: TokenizeRequest):
        return await server.tokenize(body)

    @app.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
    async def detokenize(body: DetokenizeRequest):
        return await server.detokenize(body)

    @app.get("/tokenizer_info", response_model=TokenizerInfo, responses=GET_ERRORS)
    async def tokenizer_info():
        return await server.tokenizer_info()

    @app.get("/health", response_model=Health, responses={400: ERRORS[400], 503: ERRORS[503]})
    async def health():
        h = server.health()
        return JSONResponse(h.model_dump(), status_code=200 if h.status == "ok" else 503)

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus"},
                        400: ERRORS[400]})
    async def metrics_endpoint():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


# What a set API key guards: everything but /health, /metrics and the docs.
KEYED_PATHS = ("/v1", "/tokenize", "/detokenize", "/tokenizer_info")


class Gate:
    """ASGI middleware: the Host check, bearer auth on /v1 when a key is set, the body-size limit,
    and request metrics (status code and latency to the response's first byte, labelled by route
    template)."""

    def __init__(self, app, server: Server, api_key: str | None, hosts: HostCheck, max_body_bytes: int):
        self.app, self.server, self.key, self.hosts, self.max_body = app, server, api_key, hosts, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        refused = self._refusal(scope)
        if refused is not None:
            self.server.count(scope, refused.status_code, time.monotonic() - started)
            return await refused(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        seen = {"status": None}

        async def observed(message):
            if message["type"] == "http.response.start" and seen["status"] is None:
                seen["status"] = message["status"]
                self.server.count(scope, message["status"], time.monotonic() - started)
            await send(message)

        try:
            await self.app(scope, limited, observed)
        finally:
            if seen["status"] is None:
                self.server.count(scope, 500, time.monotonic() - started)

    def _refusal(self, scope) -> JSONResponse | None:
        """The response for a request refused before it is read, or None."""
        if not self.hosts.allowed(scope):
            return error_json(400, f"this server does not answer requests for the Host in this request; it "
                              f"answers {self.hosts.describe()} (start it with --allowed-hosts to add names)",
                              "invalid_request_error", "invalid_host")
        if self.key and scope["path"].startswith(KEYED_PATHS) and not self._authorized(scope):
            return error_json(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                              "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            exc = BodyTooLarge(self.max_body)
            return error_json(413, exc.detail, "invalid_request_error", exc.error_code,
                              headers={"Connection": "close"})
        return None

    def _authorized(self, scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key.encode())
        return False


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def validation_message(errors: list[dict]) -> tuple[str, str, str | None]:
    """One message, an error code and the first bad field for pydantic's errors. Options the
    schema pins to their no-op value say "not supported"; a union's errors are told once per
    field, not once per member of the union."""
    parts, code, param = [], "invalid_request", None
    seen = set()
    # A union (str | list[str]) reports one error per member; the member of the right type says why.
    specific = {_top(e) for e in errors if not e.get("type", "").endswith("_type")}
    errors = [e for e in errors if not (e.get("type", "").endswith("_type") and _top(e) in specific)] or errors
    for e in errors:
        loc = [x for x in e.get("loc", ()) if x != "body"]
        field = ".".join(str(x) for x in _plain(loc)) or "body"
        top = str(loc[0]) if loc else "body"
        kind = e.get("type", "")
        if kind == "invalid_unicode":
            field = str((e.get("ctx") or {}).get("field") or field)
            text, this, where = e.get("msg", "invalid text"), "invalid_unicode", field
        elif kind == "unsupported_option":
            where = str((e.get("ctx") or {}).get("field") or field)
            text, this = e.get("msg", f"{where} is not supported"), "unsupported"
        elif top in UNSUPPORTED:
            text, this, where = UNSUPPORTED[top], "unsupported", top
        elif top == "adapter" and kind == "string_pattern_mismatch":
            text, this, where = ("the adapter looks like a filesystem path; adapters are loaded by store ref "
                                 "only (name, name@3, name@alias, sha256:<hex>)"), "path_not_allowed", top
        elif top in ("prompt", "input") and kind in ("string_too_short", "too_short"):
            text, this, where = f"{top} is empty; send at least one non-empty text", f"empty_{top}", top
        else:
            text, this, where = f"{field}: {e.get('msg', 'invalid')}", "invalid_request", field
        if param is None:
            param, code = where, this
        if top in seen:
            continue  # a union's members each report the same field: tell it once
        seen.add(top)
        parts.append(text)
        if len(parts) == 5:
            break
    return "; ".join(parts) or "invalid request", code, param


UNSUPPORTED = {
    "presence_penalty": "presence_penalty is not supported by this server; leave it out or send 0",
    "logit_bias": "logit_bias is not supported by this server; leave it out or send {}",
    "response_format": ('response_format other than {"type": "text"} (JSON mode, a JSON schema) is not supported '
                        'by this server: the answer would not be held to it; leave it out or send {"type": "text"}'),
    "frequency_penalty": "frequency_penalty is not supported by this server; leave it out or send 0",
    "suffix": "suffix is not supported by this server (it does not insert text); leave it out or send \"\"",
}


def _top(error: dict) -> str:
    loc = [x for x in error.get("loc", ()) if x != "body"]
    return str(loc[0]) if loc else "body"


def _plain(loc: list) -> list:
    """A location without pydantic's union-member tags (``constrained-str``, ``list[str]``)."""
    return [x for x in loc if not (isinstance(x, str) and (x in ("str", "int", "float", "bool", "none")
                                                           or "[" in x or x.startswith(("constrained-",
                                                                                        "function-"))))]
