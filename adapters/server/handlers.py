"""The request handling behind the routes, kept apart from the FastAPI wiring in ``app.py``.

Work is bounded before it is done: a request's row count is checked before any row is tokenized,
a prompt's characters before its tokens, and tokenizing and chat templates run in a thread of
their own, so one large request never holds up the event loop (other clients, ``/health``).
What the server remembers per name (lineage) is capped, so a client sending
endless distinct refs cannot grow its memory.
"""

from __future__ import annotations

import asyncio
import copy
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from adapters.pathlike import looks_like_path
from adapters.runtime import BASE, FAILED, LOADING, READY, GenerationRequest
from adapters.runtime.cache import Bounded
from adapters.server.batcher import Batcher
from adapters.server.errors import APIError, invalid, not_found, redact, translate
from adapters.server.limits import Limits
from adapters.server.prometheus import Metrics
from adapters.server.schemas import (
    AdapterStatus,
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ClassifyRequest,
    ClassifyResponse,
    ClassifyResult,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    Health,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from adapters.server.streaming import include_usage, new_id, sse_response
from adapters.tasks import TASKS
from adapters_store import epoch_seconds

MAX_VERSION = 2**63 - 1  # the store numbers versions in SQLite integers
REMEMBERED = 1024  # refs whose lineage is kept


class Server:
    """The request handling behind the routes (kept apart from FastAPI wiring)."""

    def __init__(self, engine, limits: Limits, store_root, served_name: str | None, metrics: Metrics):
        self.engine = engine
        self.limits = limits
        self.store_root = store_root
        self.metrics = metrics
        base_id = engine.base.id
        self.base_name = served_name or (base_id if getattr(engine.base, "builtin", False) else Path(base_id).name)
        self.base_names = {self.base_name, base_id, BASE}
        # The base's id is a folder for a local base: clients see its name only.
        self.base_root = base_id if getattr(engine.base, "builtin", False) or not Path(base_id).is_absolute() \
            else self.base_name
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
        # One thread owns self.tokenizer (a fast tokenizer is not safe to share between threads).
        self._text = ThreadPoolExecutor(1, thread_name_prefix="adapters-tokenize")
        self._lineage: Bounded[tuple[str, str | None], dict] = Bounded(REMEMBERED)

    async def start(self) -> None:
        await self.batcher.start()
        self._stream_executor = ThreadPoolExecutor(self.limits.max_streams, thread_name_prefix="adapters-stream")
        await self._thread(self._observe)

    async def stop(self) -> None:
        await self.batcher.stop()
        self._control.shutdown(wait=False, cancel_futures=True)
        self._text.shutdown(wait=False, cancel_futures=True)
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
        self._resident = sum(1 for i in infos if i.state == READY)
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

    async def _tokenizing(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._text, fn, *args)

    # ---- adapters ----------------------------------------------------------------------------------
    def adapter_for(self, model: str) -> str | None:
        """The engine's adapter value for a request's ``model``: None for the base, else the ref.
        ``<base>:<adapter>`` (how SGLang and Ray Serve address an adapter) names the adapter, the
        same as ``<adapter>`` alone (vLLM, LoRAX): only when the part before the colon is this
        server's base, so ``sha256:…`` and ``ensemble:…`` refs keep their meaning."""
        if model in self.base_names:
            return None
        base, colon, adapter = model.partition(":")
        if colon and adapter and base in self.base_names - {BASE}:
            model = adapter
            if model in self.base_names:
                return None
        if looks_like_path(model):
            raise invalid(f"model '{model}' looks like a filesystem path; name an adapter by its store ref "
                          "(name, name@3, name@alias, sha256:<hex>) or the base by its name "
                          f"('{self.base_name}')", "path_not_allowed", "model")
        return canonical_ref(model)

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
        return info

    def _lineage_of(self, ref: str, content: str | None) -> dict:
        """Store facts for a resident ref, cached per (ref, resident content): an alias moved and
        reloaded shows its new version."""
        got = self._lineage.get((ref, content))
        if got is None:
            from adapters_store import Store

            try:
                with Store(self.store_root) as s:
                    v = s.resolve(ref)
                    got = {"version": v.ref, "digest": v.digest, "created": v.created,
                           "lineage": redact(dict(v.lineage))}
            except Exception:
                got = {}
            self._lineage[(ref, content)] = got
        return got

    def _status(self, ref: str, info) -> AdapterStatus:
        lin = self._lineage_of(ref, info.name)
        return AdapterStatus(adapter=ref, state=info.state, task=info.task, method=info.method, labels=info.labels,
                             bytes=info.bytes, version=lin.get("version"), digest=lin.get("digest"))

    async def load(self, ref: str) -> AdapterStatus:
        ref = self._check_ref(ref)
        info = await self.ensure(ref)
        return await self._thread(self._status, ref, info)

    async def unload(self, ref: str) -> AdapterStatus:
        ref = self._check_ref(ref)

        def work():
            infos = {r: i for i in self.engine.adapters() for r in (i.refs or [i.ref])}
            info = infos.get(ref)
            if info is not None and info.state == FAILED:
                self.engine.unload(ref)  # forgets the failure; there was nothing resident to unload
                raise not_found(f"adapter '{ref}' is not loaded (its last load failed), so there is nothing "
                                "to unload; see GET /v1/models for the loaded adapters", "adapter_not_loaded")
            if info is None or info.state == LOADING:
                raise not_found(f"adapter '{ref}' is not loaded, so there is nothing to unload; see "
                                "GET /v1/models for the loaded adapters", "adapter_not_loaded")
            if info.name:
                self.metrics.expect_unload({info.name})
            self.engine.unload(ref)
            self._observe()
            for key in list(self._lineage):  # a copy: control threads may add entries meanwhile
                if key[0] == ref:
                    self._lineage.pop(key, None)
            return AdapterStatus(adapter=ref, state="UNLOADED", task=info.task, method=info.method,
                                 labels=info.labels, bytes=info.bytes)

        try:
            return await self._thread(work)
        except Exception as exc:
            raise translate(exc) from None

    def _check_ref(self, ref: str) -> str:
        if looks_like_path(ref):
            raise invalid(f"'{ref}' looks like a filesystem path; adapters are loaded by store ref only "
                          "(name, name@3, name@alias, sha256:<hex>)", "path_not_allowed", "adapter")
        if ref in self.base_names:
            raise invalid(f"'{ref}' is the base model, not an adapter", "not_an_adapter", "adapter")
        return canonical_ref(ref)

    async def models(self) -> ModelList:
        def work() -> ModelList:
            cards = [ModelCard(id=self.base_name, created=self.created, root=self.base_root, parent=None,
                               state=READY, task="causal-lm" if self.engine.is_decoder else "encoder")]
            for info in self.engine.adapters():
                if info.state == FAILED:
                    continue
                for ref in info.refs or [info.ref]:
                    lin = self._lineage_of(ref, info.name)
                    cards.append(ModelCard(
                        id=ref, created=int(epoch_seconds(lin.get("created")) or self.created), root=ref,
                        parent=self.base_name,
                        state=info.state, task=info.task, method=info.method, labels=info.labels, bytes=info.bytes,
                        version=lin.get("version"), digest=lin.get("digest"), lineage=lin.get("lineage")))
            return ModelList(data=cards)

        return await self._thread(work)

    # ---- validation ----------------------------------------------------------------------------------
    # The schemas check what holds for every deployment (types, ranges, unsupported options); these
    # check this server's limits, each before the work it bounds.
    def _max_tokens(self, requested: int | None, default: int, param: str = "max_tokens") -> int:
        n = default if requested is None else requested
        if n > self.limits.max_tokens:
            raise invalid(f"{param}={n} is over this server's limit of {self.limits.max_tokens}",
                          "max_tokens_exceeded", param)
        return n

    def _check_chars(self, chars: int, param: str) -> None:
        if chars > self.limits.max_prompt_chars:
            raise invalid(f"the prompt has {chars} characters; this server's limit is "
                          f"{self.limits.max_prompt_chars}", "prompt_too_long", param)

    def _check_rows(self, rows: int) -> None:
        if rows > self.limits.max_batch_size:
            raise invalid(f"{rows} rows in one request (prompts x n, or inputs); this server's limit is "
                          f"{self.limits.max_batch_size}: split the request", "too_many_inputs")

    def _tokens(self, text: str, virtual: int, new_tokens: int, param: str, special: bool = False) -> list[int]:
        """In the tokenizing thread: the prompt's tokens, checked against the limits (``virtual``:
        the adapter's prefix tokens, which take positions of the context too)."""
        self._check_chars(len(text), param)
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        if not ids:
            raise invalid("the prompt is empty (no tokens)", "empty_prompt", param)
        return self._check_length(ids, virtual, new_tokens, param)

    def _check_ids(self, ids: list[int], virtual: int, new_tokens: int) -> list[int]:
        """A prompt given as token ids, checked like a text's tokens."""
        self._check_vocabulary(ids, "prompt")
        return self._check_length(list(ids), virtual, new_tokens, "prompt")

    def _check_vocabulary(self, ids: list[int], param: str) -> None:
        vocab = len(self.tokenizer)
        bad = next((t for t in ids if t >= vocab), None)
        if bad is not None:
            raise invalid(f"token id {bad} is outside the base's vocabulary of {vocab}", "invalid_token", param)

    def _check_length(self, ids: list[int], virtual: int, new_tokens: int, param: str) -> list[int]:
        n, limit = len(ids), self.limits.max_prompt_tokens
        if n > limit:
            raise invalid(f"the prompt has {n} tokens; this server's limit is {limit}", "prompt_too_long", param)
        if self.context and n + new_tokens + virtual > self.context:
            raise invalid(f"the prompt ({n} tokens) plus max_tokens ({new_tokens}) is over the base's context "
                          f"length of {self.context - virtual} tokens", "context_length_exceeded", param)
        return ids

    # ---- the tokenizer ------------------------------------------------------------------------------
    async def tokenize(self, body: TokenizeRequest) -> TokenizeResponse:
        self._check_chars(len(body.prompt), "prompt")
        ids = await self._tokenizing(
            lambda: self.tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"])
        return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=self.context or None)

    async def detokenize(self, body: DetokenizeRequest) -> DetokenizeResponse:
        if len(body.tokens) > self.limits.max_prompt_tokens:
            raise invalid(f"{len(body.tokens)} tokens; this server's limit is {self.limits.max_prompt_tokens}",
                          "prompt_too_long", "tokens")

        def work() -> str:
            self._check_vocabulary(body.tokens, "tokens")
            return self.tokenizer.decode(body.tokens)

        return DetokenizeResponse(prompt=await self._tokenizing(work))

    async def tokenizer_info(self) -> TokenizerInfo:
        return await self._tokenizing(self._tokenizer_info)

    def _tokenizer_info(self) -> TokenizerInfo:
        tok = self.tokenizer
        limit = getattr(tok, "model_max_length", None)
        return TokenizerInfo(tokenizer_class=type(tok).__name__, eos_token=tok.eos_token, bos_token=tok.bos_token,
                             pad_token=tok.pad_token, unk_token=tok.unk_token,
                             chat_template=tok.chat_template if isinstance(tok.chat_template, str) else None,
                             # transformers' "no limit" is a huge sentinel, not a length
                             model_max_length=limit if isinstance(limit, int) and limit < 10**9 else None,
                             vocab_size=len(tok))

    def _check_stream(self, body, prompts: int) -> None:
        """What a stream carries: one choice of one prompt, text only (checked before any work)."""
        if prompts != 1 or body.n != 1:
            raise invalid("streaming takes one prompt and n=1; send stream=false for several choices or prompts",
                          "unsupported", "stream")
        if _asks_logprobs(body) or getattr(body, "echo", False):
            raise invalid("streaming does not return logprobs or echo; send stream=false for them", "unsupported",
                          "stream")

    async def _generation_adapter(self, model: str) -> tuple[str | None, int]:
        """The adapter a completion for ``model`` runs with (resident from here on) and its prefix
        tokens."""
        adapter = self.adapter_for(model)
        if not self.engine.is_decoder:
            raise invalid(f"the base '{self.base_name}' is an encoder: it cannot generate text; use /v1/classify",
                          "not_a_generator", "model")
        if adapter is None:
            return None, 0
        info = await self.ensure(adapter)
        if not TASKS[info.task].generative:
            raise invalid(f"'{model}' is a {info.task} adapter, not a text generator; use /v1/classify",
                          "wrong_task", "model")
        return adapter, info.virtual_tokens

    # ---- chat and completions ---------------------------------------------------------------------------
    def chat_prompt(self, messages) -> str:
        from adapters.base.loading import format_prompt

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

    def _request(self, body, prompt: str, ids: list[int], adapter: str | None, new: int) -> GenerationRequest:
        """The engine's request for one prompt of ``body``: its text already rendered and tokenized."""
        asked = _asks_logprobs(body)
        top = (body.top_logprobs or 0) if isinstance(body, ChatCompletionRequest) else (body.logprobs or 0)
        return GenerationRequest(prompt, adapter, max_new_tokens=new, temperature=body.temperature, top_p=body.top_p,
                                 seed=body.seed, stop=body.stop or (), raw=True, prompt_ids=ids, logprobs=asked,
                                 top_logprobs=top if asked else 0,
                                 echo=isinstance(body, CompletionRequest) and body.echo)

    def _piece(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def _completion_choice(self, result, prompt, body: CompletionRequest) -> CompletionChoice:
        """In the tokenizing thread: one choice, with the prompt before it (echo) and OpenAI's legacy
        logprobs: tokens, their log-probabilities, the likeliest alternatives, text offsets."""
        prompt_text = (prompt if isinstance(prompt, str) else self.tokenizer.decode(prompt)) if body.echo else ""
        text = prompt_text + result.text
        if body.logprobs is None:
            return CompletionChoice(index=0, text=text, finish_reason=result.finish_reason)
        rows = list(result.prompt_logprobs or []) if body.echo else []
        scored = result.scored_ids or []
        rows += zip(scored, result.logprobs or [], result.top_logprobs or [[]] * len(scored))
        piece = _Pieces(self._piece)  # a prompt's tokens recur among the alternatives
        pieces, offsets, at = [], [], 0
        for token, _, _ in rows:
            pieces.append(piece[token])
            offsets.append(at)
            at += len(pieces[-1])
        tops = [None if lp is None else {piece[t]: v for t, v in top} for _, lp, top in rows]
        return CompletionChoice(index=0, text=text, finish_reason=result.finish_reason, logprobs=CompletionLogprobs(
            tokens=pieces, token_logprobs=[lp for _, lp, _ in rows], top_logprobs=tops, text_offset=offsets))

    def _chat_logprobs(self, result) -> ChatLogprobs | None:
        if result.logprobs is None:
            return None

        pieces = _Pieces(self._piece)

        def entry(token: int, logprob: float) -> dict:
            piece = pieces[token]
            return {"token": piece, "logprob": logprob, "bytes": list(piece.encode("utf-8"))}

        tops = result.top_logprobs or [[]] * len(result.logprobs)
        return ChatLogprobs(content=[
            TokenLogprob(**entry(t, lp), top_logprobs=[TopLogprob(**entry(a, v)) for a, v in top])
            # the tokens of the message: an end-of-sequence token the model chose is not part of it
            for t, lp, top in zip(result.token_ids, result.logprobs, tops)])

    async def chat(self, body: ChatCompletionRequest):
        with self.batcher.preparing():
            request = await self._chat_request(body)
        if body.stream:
            return await self._stream(request, body.model, chat=True, usage=include_usage(body))
        results = await self._generate(request.adapter, [request], body.n)
        scored = await self._tokenizing(lambda: _once_per_result(results, lambda i: self._chat_logprobs(results[i])))
        choices = [ChatChoice(index=i, message=AssistantMessage(content=r.text), finish_reason=r.finish_reason,
                              logprobs=lp) for i, (r, lp) in enumerate(zip(results, scored))]
        used, out = len(request.prompt_ids), sum(r.tokens for r in results)
        self.metrics.tokens.inc(out)
        return ChatCompletionResponse(id=new_id("chatcmpl"), created=int(time.time()), model=body.model,
                                      choices=choices, usage=Usage(prompt_tokens=used, completion_tokens=out,
                                                                   total_tokens=used + out))

    async def _chat_request(self, body: ChatCompletionRequest) -> GenerationRequest:
        self._check_rows(body.n)
        if body.stream:
            self._check_stream(body, 1)
        # The rendered prompt holds at least every role and content: refuse before rendering it.
        self._check_chars(sum(len(m.role) + len(m.text()) for m in body.messages), "messages")
        adapter, virtual = await self._generation_adapter(body.model)
        if body.max_completion_tokens is not None:
            new = self._max_tokens(body.max_completion_tokens, 0, "max_completion_tokens")
        else:
            new = self._max_tokens(body.max_tokens, self.limits.default_max_tokens)

        def prepare():
            prompt = self.chat_prompt(body.messages)
            return prompt, self._tokens(prompt, virtual, new, "messages")

        prompt, ids = await self._tokenizing(prepare)
        return self._request(body, prompt, ids, adapter, new)

    async def complete(self, body: CompletionRequest):
        with self.batcher.preparing():
            prompts, requests = await self._completion_requests(body)
        if body.stream:
            return await self._stream(requests[0], body.model, chat=False, usage=include_usage(body))
        results = await self._generate(requests[0].adapter, requests, body.n)
        shown = [p for p in prompts for _ in range(body.n)]
        rendered = await self._tokenizing(lambda: _once_per_result(
            results, lambda i: self._completion_choice(results[i], shown[i], body)))
        # OpenAI's order for several prompts and n: prompt by prompt, each prompt's n choices.
        choices = [c.model_copy(update={"index": i}) for i, c in enumerate(rendered)]
        used, out = sum(len(r.prompt_ids) for r in requests), sum(r.tokens for r in results)
        self.metrics.tokens.inc(out)
        return CompletionResponse(id=new_id("cmpl"), created=int(time.time()), model=body.model, choices=choices,
                                  usage=Usage(prompt_tokens=used, completion_tokens=out, total_tokens=used + out))

    async def _completion_requests(self, body: CompletionRequest) -> tuple[list, list[GenerationRequest]]:
        """The prompts of ``body`` and one request per prompt (each one run for all ``n`` choices)."""
        raw = body.prompt
        # One text, a list of texts, one list of token ids, or a list of them.
        prompts = [raw] if isinstance(raw, str) or isinstance(raw[0], int) else list(raw)
        self._check_rows(len(prompts) * body.n)
        if body.stream:
            self._check_stream(body, len(prompts))
        # OpenAI's default of 16 when max_tokens is left out, within this server's limit.
        requested = body.max_tokens if "max_tokens" in body.model_fields_set else None
        if requested == 0 and not body.echo:
            raise invalid("max_tokens=0 generates nothing; it is accepted with echo (to score the prompt)",
                          "invalid_request", "max_tokens")
        new = self._max_tokens(requested, min(16, self.limits.max_tokens))
        for p in prompts:
            if isinstance(p, str):
                self._check_chars(len(p), "prompt")
        adapter, virtual = await self._generation_adapter(body.model)
        if body.echo and body.logprobs is not None and adapter is not None and adapter.startswith("ensemble:"):
            raise invalid("echo with logprobs (prompt scores) is not supported for an ensemble; ask each member "
                          "adapter alone", "unsupported", "echo")
        tokens = await self._tokenizing(lambda: [self._tokens(p, virtual, new, "prompt") if isinstance(p, str)
                                                 else self._check_ids(p, virtual, new) for p in prompts])
        return prompts, [self._request(body, p if isinstance(p, str) else "", ids, adapter, new)
                         for p, ids in zip(prompts, tokens)]

    async def _generate(self, adapter: str | None, requests: list[GenerationRequest], n: int) -> list:
        """``n`` results per request, in order. A greedy request runs once for all its choices (they
        are the same answer); sampled choices run as rows of their own, seeded seed, seed+1, ...
        when seeded so that they differ."""
        rows, where = [], []
        for request in requests:
            if request.temperature == 0:
                where += [len(rows)] * n
                rows.append(request)
            else:
                where += range(len(rows), len(rows) + n)
                rows += [request] * n if request.seed is None else [
                    replace(request, seed=(request.seed + i) % (2**63)) for i in range(n)]
        results = await self._submit("generate", adapter, rows)
        return [results[i] for i in where]

    async def _stream(self, request: GenerationRequest, model: str, chat: bool, usage: bool):
        if self._streams >= self.limits.max_streams:
            raise APIError(503, f"too many streams in progress (max_streams={self.limits.max_streams})",
                           "overloaded_error", "overloaded")
        loop = asyncio.get_running_loop()

        def ended() -> None:
            self._observe()
            # The slot is freed when the work ends, even if the client vanished before its first byte.
            try:
                loop.call_soon_threadsafe(self._end_stream)
            except RuntimeError:  # the loop is closed
                pass

        self._streams += 1
        self.metrics.streams.set(self._streams)
        return await sse_response(self.engine, request, model=model, prompt_tokens=len(request.prompt_ids), chat=chat,
                                  usage=usage, executor=self._stream_executor, on_tokens=self.metrics.tokens.inc,
                                  on_end=ended)

    def _end_stream(self) -> None:
        self._streams -= 1
        self.metrics.streams.set(self._streams)

    async def _submit(self, kind: str, adapter: str | None, rows: list) -> list:
        try:
            return await self.batcher.submit(kind, adapter, rows)
        except Exception as exc:
            raise translate(exc) from None

    def _run(self, kind: str, rows: list) -> list:
        """In a batch worker thread: one engine call for rows of many adapters."""
        if kind == "classify":
            return self.engine.classify([r[0] for r in rows], [r[1] for r in rows])
        return self.engine.run(rows)

    # ---- classification ------------------------------------------------------------------------------------
    async def classify(self, body: ClassifyRequest) -> ClassifyResponse:
        with self.batcher.preparing():
            adapter, texts, used = await self._classify_rows(body)
        results = await self._submit("classify", adapter, [(t, adapter) for t in texts])
        data = [ClassifyResult(index=i, label=r["label"], probabilities=r["probabilities"])
                for i, r in enumerate(results)]
        return ClassifyResponse(id=new_id("cls"), created=int(time.time()), model=body.model, data=data,
                                usage=Usage(prompt_tokens=used, total_tokens=used))

    async def _classify_rows(self, body: ClassifyRequest) -> tuple[str, list[str], int]:
        """The adapter, the texts and their token count, all checked."""
        adapter = self.adapter_for(body.model)
        if adapter is None:
            raise invalid(f"'{body.model}' is the base model; name a classification adapter", "wrong_task", "model")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        self._check_rows(len(texts))
        for t in texts:
            self._check_chars(len(t), "input")
        info = await self.ensure(adapter)
        if TASKS[info.task].generative:
            raise invalid(f"'{body.model}' is a {info.task} adapter, not a classifier", "wrong_task", "model")
        virtual = info.virtual_tokens
        used = sum(len(ids) for ids in await self._tokenizing(
            lambda: [self._tokens(t, virtual, 0, "input", special=True) for t in texts]))
        return adapter, texts, used


def canonical_ref(ref: str) -> str:
    """``ref`` as the engine should remember it: refs that differ only in the case of a content
    id are one ref, and a version number the store cannot hold is refused here (404)."""
    from adapters.runtime.ensemble import is_ensemble

    members = [m.rpartition("*")[0] if "*" in m else m for m in ref[len("ensemble:"):].split("+")] \
        if is_ensemble(ref) else [ref]
    for member in members:
        name, at, version = member.strip().partition("@")
        if at and version.isdigit() and int(version) > MAX_VERSION:
            raise not_found(f"no adapter '{name}' has a version {version} (versions are numbered 1, 2, 3 ... "
                            f"by the store); see `adapters list {name}` for its versions")
    if ref != ref.strip():
        raise not_found(f"no adapter is named {ref!r}: refs have no spaces around them")
    if ref[:7].lower() == "sha256:":
        return "sha256:" + ref[7:].lower()
    return ref


class _Pieces(dict):
    """token -> its text, each decoded once."""

    def __init__(self, decode):
        super().__init__()
        self.decode = decode

    def __missing__(self, token: int) -> str:
        self[token] = text = self.decode(token)
        return text


def _asks_logprobs(body) -> bool:
    """``logprobs`` is a flag on chat (with ``top_logprobs`` beside it) and a count of alternatives
    on completions, where 0 still asks for the tokens' own log-probabilities (OpenAI's two APIs)."""
    return bool(body.logprobs) if isinstance(body, ChatCompletionRequest) else body.logprobs is not None


def _once_per_result(results: list, build) -> list:
    """``build(i)`` for the first choice ``i`` of each distinct result, the same for the others: the
    choices of a greedy request share one result, and it is rendered once."""
    built: dict[int, object] = {}
    return [built[id(r)] if id(r) in built else built.setdefault(id(r), build(i)) for i, r in enumerate(results)]
