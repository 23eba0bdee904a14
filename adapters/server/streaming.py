"""Server-sent events for ``stream=true``: the engine's token stream, in OpenAI's chunk format.

The engine streams in a worker thread; pieces cross to the event loop through an asyncio queue, and a
client that goes away cancels the generation at its next token.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from adapters.runtime.requests import GenerationRequest
from adapters.server.errors import translate
from adapters.server.schemas import (
    ChatChunkChoice,
    ChatDelta,
    CompletionChunkChoice,
    StreamChunk,
    StreamError,
    Usage,
)


async def sse_response(engine, request: GenerationRequest, *, model: str, prompt_tokens: int, chat: bool,
                       usage: bool, executor: Executor, on_tokens: Callable[[int], None],
                       on_end: Callable[[], None]) -> StreamingResponse:
    """Stream ``request``'s completion as server-sent events (``chat``: chat chunks, else
    completion chunks; ``usage``: a last chunk with the token counts). The engine runs in
    ``executor``; ``on_tokens`` gets the generated token count when the stream completes, and
    ``on_end`` is called on the worker thread once the engine is done with the request, whether
    the client stayed or not. Errors before the first piece raise (a proper status code); later
    ones end the stream with an error event."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    def post(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def work() -> None:
        pieces = None
        try:
            pieces = engine.stream_request(request)
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
            on_end()

    try:
        executor.submit(work)
    except BaseException:
        on_end()
        raise
    try:
        first = await queue.get()  # errors before the first piece still get a proper status code
    except BaseException:
        cancel.set()
        raise
    if first[0] == "error":
        raise translate(first[1])

    rid = new_id("chatcmpl" if chat else "cmpl")
    created = int(time.time())
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            choice = ChatChunkChoice(delta=ChatDelta(role="assistant" if role else None, content=text),
                                     finish_reason=finish)
        else:
            choice = CompletionChunkChoice(text=text or "", finish_reason=finish)
        return sse(StreamChunk(id=rid, object=obj, created=created, model=model, choices=[choice]))

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
                yield sse_json({"error": StreamError(message=err.message, type=err.type, code=err.code).model_dump()})
                return
            finish, out = item[1]
            on_tokens(out)
            yield chunk(None if chat else "", finish)
            if usage:
                yield sse(StreamChunk(id=rid, object=obj, created=created, model=model, choices=[],
                                      usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=out,
                                                  total_tokens=prompt_tokens + out)))
            yield "data: [DONE]\n\n"
        finally:
            cancel.set()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def new_id(prefix: str) -> str:
    """A response id in OpenAI's shape: ``chatcmpl-`` and 24 hex digits."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def sse(event: BaseModel) -> str:
    return sse_json(event.model_dump())


def sse_json(obj: dict) -> str:
    # json.dumps, not pydantic's dump_json: ASCII-escaped like every event clients already parse.
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def include_usage(body) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)
