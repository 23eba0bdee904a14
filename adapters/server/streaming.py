"""Server-sent events for ``stream=true``: the engine's token stream, in OpenAI's chunk format.

The engine streams in a worker thread; pieces cross to the event loop through an asyncio queue, and a
client that goes away cancels the generation at its next token.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from adapters.server.errors import APIError, invalid, translate


class Streaming:
    """The streaming half of ``Server`` (a mixin: it uses the server's engine, limits and metrics)."""

    def _stream_checks(self, body, prompts: int) -> None:
        if prompts != 1 or body.n != 1:
            raise invalid("streaming takes one prompt and n=1", "unsupported", "stream")
        if self._streams >= self.limits.max_streams:
            raise APIError(503, f"too many streams in progress (max_streams={self.limits.max_streams})",
                           "overloaded_error", "overloaded")

    async def _stream(self, row, model: str, prompt_tokens: int, chat: bool, usage: bool) -> StreamingResponse:
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
                post(("end", (pieces.finish_reason, pieces.tokens)))
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
            return sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]})

        async def events() -> AsyncIterator[str]:
            try:
                if chat:
                    yield chunk("", None, role=True)
                item = first
                while item[0] == "piece":
                    yield chunk(item[1], None)
                    item = await queue.get()
                if item[0] == "error":
                    err = translate(item[1])
                    yield sse({"error": {"message": err.message, "type": err.type, "code": err.code}})
                    return
                finish, out = item[1]
                self.metrics.tokens.inc(out)
                yield chunk(None if chat else "", finish)
                if usage:
                    yield sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [],
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


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def include_usage(body) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)
