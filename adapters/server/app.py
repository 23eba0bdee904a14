"""The HTTP server: an OpenAI-compatible API over one ``adapters.runtime.Engine``.

``model`` in a request is an adapter's store ref (loaded on first use when not resident) or the
base's name (the bare base). Adapters are named by store ref only, never by a filesystem path: the
server resolves refs through the store, re-hashing the files before a load.

    app = create_app(engine, api_key="...", limits=Limits(max_tokens=256), store_root=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.server.batcher import Batcher, Overloaded
from adapters.server.metrics import CONTENT_TYPE_LATEST, Metrics
from adapters.server.schemas import (AdapterRequest, AdapterStatus, AssistantMessage, ChatChoice,
                                     ChatCompletionRequest, ChatCompletionResponse, ClassifyRequest,
                                     ClassifyResponse, ClassifyResult, CompletionChoice, CompletionRequest,
                                     CompletionResponse, ErrorResponse, Health, ModelCard, ModelList, Usage)

BASE_ROW = None  # the engine's adapter value for "no adapter"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; over a limit is a 422, a full queue a 503."""

    max_prompt_chars: int = 32_000  # per prompt, message list or classify input
    max_prompt_tokens: int = 2048  # also capped by the base's context length
    max_tokens: int = 512  # generated tokens per completion
    default_max_tokens: int = 128  # chat completions without max_tokens
    max_batch_size: int = 16  # rows per engine call; also the most rows one request may carry
    max_wait_ms: float = 10.0  # how long a batch waits to fill up
    max_queue: int = 256  # rows waiting for the engine; beyond: 503
    max_streams: int = 32  # concurrent streaming responses; beyond: 503
    workers: int = 1  # engine calls in flight (the engine interleaves them step by step)


# ---- errors ---------------------------------------------------------------------------------------
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
    from store.errors import AmbiguousRef, IntegrityError, InvalidName, RefNotFound, StoreError

    from adapters.errors import UsageError
    from adapters.inference import BaseMismatchError

    if isinstance(exc, APIError):
        return exc
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    hint = getattr(exc, "hint", None)
    if hint:
        message = f"{message} ({hint})"
    runtime = _runtime()
    if isinstance(exc, Overloaded) or (runtime and isinstance(exc, runtime.CacheFullError)):
        return APIError(503, message, "overloaded_error", "overloaded")
    if isinstance(exc, BaseMismatchError) or _base_mismatch(exc):
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


def _base_mismatch(exc: BaseException) -> bool:
    # The engine raises a plain UsageError when an adapter's shapes do not fit this base.
    text = str(exc)
    return "trained on another base" in text or "does not fit this base" in text or (
        "cannot run on the encoder base" in text)


def _runtime():
    import sys

    return sys.modules.get("adapters.runtime")


# ---- refs -----------------------------------------------------------------------------------------
_PATHLIKE = re.compile(r"[/\\]|^[.~]|^[A-Za-z]:")


def looks_like_path(value: str) -> bool:
    """Store refs never hold a slash or start with '.' or '~'; filesystem paths usually do."""
    return bool(_PATHLIKE.search(value))


def store_resolver(store_root: str | Path | None = None) -> Callable[[str], Path]:
    """The server's resolver: a store ref -> its (re-hashed) directory; a path is refused."""
    from store import Store
    from store.errors import RefNotFound

    def resolve(ref: str) -> Path:
        if looks_like_path(ref):
            raise RefNotFound(f"'{ref}' looks like a path; the server serves store refs only",
                              "store it first (`adapters import`) and use its ref")
        with Store(store_root) as s:
            return s.check(ref).path

    return resolve


# ---- the app ---------------------------------------------------------------------------------------
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


@dataclass
class Row:
    prompt: str
    adapter: str | None
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]

    def __post_init__(self):
        # Temperatures near 0 overflow the logits and a top_p under float32's range keeps no token;
        # both limits are greedy decoding, which is what they get.
        if self.temperature < 1e-5 or self.top_p < 1e-6:
            self.temperature, self.top_p = 0.0, 1.0


class Server:
    """The request handling behind the routes (kept apart from FastAPI wiring)."""

    def __init__(self, engine, limits: Limits, store_root, served_name: str | None, metrics: Metrics):
        self.engine = engine
        self.limits = limits
        self.store_root = store_root
        self.metrics = metrics
        base_id = engine.base.id
        self.base_name = served_name or (base_id if getattr(engine.base, "builtin", False) else Path(base_id).name)
        self.base_names = {self.base_name, base_id, "__base__"}
        self.created = int(time.time())
        # The engine's tokenizer is used from its worker threads; count tokens with a copy so the
        # event loop never touches a tokenizer another thread is using.
        try:
            self.tokenizer = copy.deepcopy(engine.tokenizer)
        except Exception:  # pragma: no cover - tokenizers that cannot be copied
            self.tokenizer = engine.tokenizer
        config = engine.config.get_text_config() if hasattr(engine.config, "get_text_config") else engine.config
        self.context = int(getattr(config, "max_position_embeddings", 0) or 0) or None
        self.batcher = Batcher(self._run, max_batch_size=limits.max_batch_size, max_wait_ms=limits.max_wait_ms,
                               max_queue=limits.max_queue, workers=limits.workers,
                               on_batch=self._on_batch, on_wait=lambda k, s: metrics.queue_wait.labels(k).observe(s))
        self._streams = 0
        self._resident = 0
        self._stream_executor: ThreadPoolExecutor | None = None
        self._control = ThreadPoolExecutor(8, thread_name_prefix="adapters-control")  # loads, listings
        self._lineage: dict[tuple[str, str | None], dict] = {}
        self._virtual: dict[str, int] = {}  # ref -> prefix virtual tokens (they take positions)

    async def start(self) -> None:
        await self.batcher.start()
        self._stream_executor = ThreadPoolExecutor(self.limits.max_streams, thread_name_prefix="adapters-stream")
        await self._thread(self._observe)

    async def stop(self) -> None:
        await self.batcher.stop()
        self._control.shutdown(wait=False, cancel_futures=True)
        if self._stream_executor is not None:
            self._stream_executor.shutdown(wait=False, cancel_futures=True)

    # ---- bookkeeping ------------------------------------------------------------------------------
    def count(self, scope: dict, status: int, seconds: float) -> None:
        endpoint = getattr(scope.get("route"), "path", None) or "other"  # route templates only: bounded labels
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(seconds)
        self.metrics.queued.set(self.batcher.queued_rows)

    def _observe(self) -> None:
        infos = self.engine.adapters()
        self._resident = sum(1 for i in infos if i.state == "READY")
        self.metrics.observe_resident(infos)

    def _on_batch(self, kind: str, rows: int, adapters: int, seconds: float) -> None:
        self.metrics.observe_batch(kind, rows, adapters, seconds)
        self._observe()

    def health(self) -> Health:
        ok = self.batcher.alive
        return Health(status="ok" if ok else "degraded", base=self.base_name, queued_rows=self.batcher.queued_rows,
                      active_streams=self._streams, resident_adapters=self._resident)

    async def _thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._control, fn, *args)

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:24]}"

    # ---- adapters ----------------------------------------------------------------------------------
    def adapter_for(self, model: str) -> str | None:
        """The engine's adapter value for a request's ``model``: None for the base, else the ref."""
        if model in self.base_names:
            return BASE_ROW
        if looks_like_path(model):
            raise invalid(f"model '{model}' looks like a filesystem path; name an adapter by its store ref "
                          "(name, name@3, name@alias, sha256:<hex>) or the base by its name "
                          f"('{self.base_name}')", "path_not_allowed", "model")
        return model

    async def ensure(self, ref: str):
        """Make ``ref`` resident (off the event loop) and return its AdapterInfo."""
        try:
            info = await self._thread(self._load, ref)
        except Exception as exc:
            raise translate(exc) from None
        return info

    def _load(self, ref: str):
        info = self.engine.load(ref)
        self._observe()
        if ref not in self._virtual:
            self._virtual[ref] = _virtual_tokens(info)
        return info

    def _lineage_of(self, ref: str, content: str | None) -> dict:
        """Store facts for a resident ref, cached per (ref, resident content): an alias moved and
        reloaded shows its new version."""
        got = self._lineage.get((ref, content))
        if got is None:
            from store import Store

            try:
                with Store(self.store_root) as s:
                    v = s.resolve(ref)
                    got = {"version": v.ref, "digest": v.digest, "created": v.created, "lineage": dict(v.lineage)}
            except Exception:
                got = {}
            self._lineage[(ref, content)] = got
        return got

    def _status(self, ref: str, info) -> AdapterStatus:
        lin = self._lineage_of(ref, info.name)
        return AdapterStatus(adapter=ref, state=info.state, task=info.task, method=info.method, labels=info.labels,
                             bytes=info.bytes, version=lin.get("version"), digest=lin.get("digest"))

    async def load(self, ref: str) -> AdapterStatus:
        self._check_ref(ref)
        info = await self.ensure(ref)
        return await self._thread(self._status, ref, info)

    async def unload(self, ref: str) -> AdapterStatus:
        self._check_ref(ref)

        def work():
            infos = {r: i for i in self.engine.adapters() for r in (i.refs or [i.ref])}
            info = infos.get(ref)
            if info is None or info.state == "LOADING":
                raise not_found(f"adapter '{ref}' is not loaded", "adapter_not_loaded")
            if info.name:
                self.metrics.expect_unload({info.name})
            self.engine.unload(ref)
            self._observe()
            for key in list(self._lineage):  # a copy: control threads may add entries meanwhile
                if key[0] == ref:
                    self._lineage.pop(key, None)
            self._virtual.pop(ref, None)
            return AdapterStatus(adapter=ref, state="UNLOADED", task=info.task, method=info.method,
                                 labels=info.labels, bytes=info.bytes)

        try:
            return await self._thread(work)
        except Exception as exc:
            raise translate(exc) from None

    def _check_ref(self, ref: str) -> None:
        if looks_like_path(ref):
            raise invalid(f"'{ref}' looks like a filesystem path; adapters are loaded by store ref only "
                          "(name, name@3, name@alias, sha256:<hex>)", "path_not_allowed", "adapter")
        if ref in self.base_names:
            raise invalid(f"'{ref}' is the base model, not an adapter", "not_an_adapter", "adapter")

    async def models(self) -> ModelList:
        def work() -> ModelList:
            cards = [ModelCard(id=self.base_name, created=self.created, root=self.engine.base.id, parent=None,
                               state="READY", task="causal-lm" if self.engine.is_decoder else "encoder")]
            for info in self.engine.adapters():
                if info.state == "FAILED":
                    continue
                for ref in info.refs or [info.ref]:
                    lin = self._lineage_of(ref, info.name)
                    cards.append(ModelCard(
                        id=ref, created=_epoch(lin.get("created")) or self.created, root=ref, parent=self.base_name,
                        state=info.state, task=info.task, method=info.method, labels=info.labels, bytes=info.bytes,
                        version=lin.get("version"), digest=lin.get("digest"), lineage=lin.get("lineage")))
            return ModelList(data=cards)

        return await self._thread(work)

    # ---- validation ----------------------------------------------------------------------------------
    def _max_tokens(self, requested: int | None, default: int) -> int:
        n = default if requested is None else requested
        if n > self.limits.max_tokens:
            raise invalid(f"max_tokens={n} is over this server's limit of {self.limits.max_tokens}",
                          "max_tokens_exceeded", "max_tokens")
        return n

    def _check_prompt(self, text: str, adapter: str | None, new_tokens: int, param: str,
                      special: bool = False) -> int:
        if len(text) > self.limits.max_prompt_chars:
            raise invalid(f"the prompt has {len(text)} characters; this server's limit is "
                          f"{self.limits.max_prompt_chars}", "prompt_too_long", param)
        n = len(self.tokenizer(text, add_special_tokens=special)["input_ids"])
        if n == 0:
            raise invalid("the prompt is empty (no tokens)", "empty_prompt", param)
        limit = self.limits.max_prompt_tokens
        if n > limit:
            raise invalid(f"the prompt has {n} tokens; this server's limit is {limit}", "prompt_too_long", param)
        if self.context:
            virtual = self._virtual.get(adapter, 0) if adapter else 0
            if n + new_tokens + virtual > self.context:
                raise invalid(f"the prompt ({n} tokens) plus max_tokens ({new_tokens}) is over the base's context "
                              f"length of {self.context - virtual} tokens", "context_length_exceeded", param)
        return n

    def _stops(self, stop) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4:
            raise invalid("at most 4 stop strings", "invalid_stop", "stop")
        return [s for s in stops if s]

    def _unsupported(self, body) -> None:
        if body.logprobs not in (None, False, 0):
            raise invalid("logprobs are not supported by this server", "unsupported", "logprobs")
        if getattr(body, "echo", False):
            raise invalid("echo is not supported by this server", "unsupported", "echo")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name) not in (None, 0, 0.0):
                raise invalid(f"{name} is not supported by this server", "unsupported", name)

    async def _generation_adapter(self, model: str) -> str | None:
        adapter = self.adapter_for(model)
        if not self.engine.is_decoder:
            raise invalid(f"the base '{self.base_name}' is an encoder: it cannot generate text; use /v1/classify",
                          "not_a_generator", "model")
        if adapter is not None:
            info = await self.ensure(adapter)
            if info.task != "causal-lm":
                raise invalid(f"'{model}' is a {info.task} adapter, not a text generator; use /v1/classify",
                              "wrong_task", "model")
        return adapter

    # ---- chat and completions ---------------------------------------------------------------------------
    def chat_prompt(self, messages) -> str:
        from adapters.batching import format_prompt

        turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
        if len(turns) == 1 and turns[0]["role"] == "user":
            return format_prompt(self.tokenizer, turns[0]["content"])  # what the adapters were trained on
        if getattr(self.tokenizer, "chat_template", None):
            try:
                return self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
            except Exception as exc:
                raise invalid(f"the base's chat template refused these messages: {exc}", "invalid_messages",
                              "messages") from None
        return format_prompt(self.tokenizer, "\n".join(f"{t['role']}: {t['content']}" for t in turns))

    async def chat(self, body: ChatCompletionRequest):
        self._unsupported(body)
        adapter = await self._generation_adapter(body.model)
        new = self._max_tokens(body.max_completion_tokens or body.max_tokens, self.limits.default_max_tokens)
        prompt = self.chat_prompt(body.messages)
        used = self._check_prompt(prompt, adapter, new, "messages")
        row = Row(prompt, adapter, new, body.temperature, body.top_p, body.seed, self._stops(body.stop))
        if body.stream:
            self._stream_checks(body, 1)
            return await self._stream(row, body.model, used, chat=True, usage=_include_usage(body))
        results = await self._submit("generate", adapter, _choices(row, body.n))
        choices = [ChatChoice(index=i, message=AssistantMessage(content=r.text), finish_reason=r.finish_reason)
                   for i, r in enumerate(results)]
        out = sum(r.tokens for r in results)
        self.metrics.tokens.inc(out)
        return ChatCompletionResponse(id=self._id("chatcmpl"), created=int(time.time()), model=body.model,
                                      choices=choices, usage=Usage(prompt_tokens=used, completion_tokens=out,
                                                                   total_tokens=used + out))

    async def complete(self, body: CompletionRequest):
        self._unsupported(body)
        adapter = await self._generation_adapter(body.model)
        new = self._max_tokens(body.max_tokens, 16)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise invalid("prompt: an empty list", "empty_prompt", "prompt")
        stops = self._stops(body.stop)
        used, rows = 0, []
        for p in prompts:
            used += self._check_prompt(p, adapter, new, "prompt")
            rows += _choices(Row(p, adapter, new, body.temperature, body.top_p, body.seed, stops), body.n)
        if body.stream:
            self._stream_checks(body, len(prompts))
            return await self._stream(rows[0], body.model, used, chat=False, usage=_include_usage(body))
        results = await self._submit("generate", adapter, rows)
        choices = [CompletionChoice(index=i, text=r.text, finish_reason=r.finish_reason) for i, r in enumerate(results)]
        out = sum(r.tokens for r in results)
        self.metrics.tokens.inc(out)
        return CompletionResponse(id=self._id("cmpl"), created=int(time.time()), model=body.model, choices=choices,
                                  usage=Usage(prompt_tokens=used, completion_tokens=out, total_tokens=used + out))

    async def _submit(self, kind: str, adapter: str | None, rows: list) -> list:
        if len(rows) > self.limits.max_batch_size:
            raise invalid(f"{len(rows)} rows in one request (prompts x n); this server's limit is "
                          f"{self.limits.max_batch_size}", "too_many_inputs")
        try:
            return await self.batcher.submit(kind, adapter, rows)
        except Exception as exc:
            raise translate(exc) from None

    def _run(self, kind: str, rows: list) -> list:
        """In a batch worker thread: one engine call for rows of many adapters."""
        if kind == "classify":
            return self.engine.classify([r[0] for r in rows], [r[1] for r in rows])
        return self.engine.generate(
            [r.prompt for r in rows], [r.adapter for r in rows], max_new_tokens=[r.max_new_tokens for r in rows],
            temperature=[r.temperature for r in rows], top_p=[r.top_p for r in rows], seed=[r.seed for r in rows],
            stop=[list(r.stop) for r in rows], raw=True)

    # ---- streaming ------------------------------------------------------------------------------------
    def _stream_checks(self, body, prompts: int) -> None:
        if prompts != 1 or body.n != 1:
            raise invalid("streaming takes one prompt and n=1", "unsupported", "stream")
        if self._streams >= self.limits.max_streams:
            raise APIError(503, f"too many streams in progress (max_streams={self.limits.max_streams})",
                           "overloaded_error", "overloaded")

    async def _stream(self, row: Row, model: str, prompt_tokens: int, chat: bool, usage: bool) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        engine = self.engine

        def post(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        def work() -> None:
            pieces = None
            try:
                pieces = engine.stream(row.prompt, row.adapter, max_new_tokens=row.max_new_tokens,
                                       temperature=row.temperature, top_p=row.top_p, seed=row.seed,
                                       stop=list(row.stop), raw=True)
                for piece in pieces:
                    if cancel.is_set():
                        break
                    post(("piece", piece))
                post(("end", None))
            except BaseException as exc:  # noqa: BLE001 - reported to the client as an error event
                post(("error", exc))
            finally:
                if pieces is not None:
                    pieces.close()
                self._observe()
                # The slot is freed when the work ends, even if the client vanished before its first byte.
                try:
                    loop.call_soon_threadsafe(self._end_stream)
                except RuntimeError:
                    pass

        self._streams += 1
        self.metrics.streams.set(self._streams)
        try:
            self._stream_executor.submit(work)
        except BaseException:
            self._end_stream()
            raise
        try:
            first = await queue.get()  # errors before the first piece still get a proper status code
        except BaseException:
            cancel.set()
            raise
        if first[0] == "error":
            raise translate(first[1])

        rid = self._id("chatcmpl" if chat else "cmpl")
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {}
                if role:
                    delta["role"] = "assistant"
                if text is not None:
                    delta["content"] = text
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            return _sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]})

        async def events() -> AsyncIterator[str]:
            text = []
            try:
                if chat:
                    yield chunk("", None, role=True)
                item = first
                while True:
                    if item[0] == "piece":
                        text.append(item[1])
                        yield chunk(item[1], None)
                    elif item[0] == "end":
                        break
                    else:
                        err = translate(item[1])
                        yield _sse({"error": {"message": err.message, "type": err.type, "code": err.code}})
                        return
                    item = await queue.get()
                full = "".join(text)
                out = len(self.tokenizer(full, add_special_tokens=False)["input_ids"]) if full else 0
                # The engine's stream reports no finish reason: re-count the text's tokens.
                finish = "length" if out >= row.max_new_tokens else "stop"
                self.metrics.tokens.inc(out)
                yield chunk(None if chat else "", finish)
                if usage:
                    yield _sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out,
                                          "total_tokens": prompt_tokens + out}})
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _end_stream(self) -> None:
        self._streams -= 1
        self.metrics.streams.set(self._streams)

    # ---- classification ------------------------------------------------------------------------------------
    async def classify(self, body: ClassifyRequest) -> ClassifyResponse:
        adapter = self.adapter_for(body.model)
        if adapter is None:
            raise invalid(f"'{body.model}' is the base model; name a classification adapter", "wrong_task", "model")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise invalid("input: an empty list", "empty_input", "input")
        info = await self.ensure(adapter)
        if info.task != "classification":
            raise invalid(f"'{body.model}' is a {info.task} adapter, not a classifier", "wrong_task", "model")
        used = sum(self._check_prompt(t, adapter, 0, "input", special=True) for t in texts)
        results = await self._submit("classify", adapter, [(t, adapter) for t in texts])
        data = [ClassifyResult(index=i, label=r["label"], probabilities=r["probabilities"])
                for i, r in enumerate(results)]
        return ClassifyResponse(id=self._id("cls"), created=int(time.time()), model=body.model, data=data,
                                usage=Usage(prompt_tokens=used, total_tokens=used))


def _choices(row: Row, n: int) -> list[Row]:
    """``n`` rows for one prompt; seeded sampling gets seed, seed+1, ... so choices differ."""
    if n == 1 or row.seed is None:
        return [row] * n
    from dataclasses import replace

    return [replace(row, seed=(row.seed + i) % (2**63)) for i in range(n)]


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _include_usage(body) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


def _epoch(iso: str | None) -> int | None:
    if not iso:
        return None
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _virtual_tokens(info) -> int:
    """A prefix adapter's virtual tokens (they shift positions), read from its config."""
    if info.method != "prefix" or not info.path:
        return 0
    try:
        cfg = json.loads((Path(info.path) / "adapter_config.json").read_text())
        return int(cfg.get("num_virtual_tokens") or 0)
    except (OSError, ValueError):
        return 0
