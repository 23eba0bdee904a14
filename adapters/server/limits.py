"""What one request may ask for, and how the server batches."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; over a limit is a 422 (a body over max_body_bytes a 413), a
    full queue a 503. Each is checked before the work it bounds: the body size before it is read
    whole, the row count before any row is tokenized, the characters before the tokens."""

    max_body_bytes: int = 4 * 2**20  # request body (Content-Length, or counted while it streams in); beyond: 413
    max_prompt_chars: int = 32_000  # per prompt, message list or classify input
    max_prompt_tokens: int = 2048  # also capped by the base's context length
    max_tokens: int = 512  # generated tokens per completion
    default_max_tokens: int = 128  # chat completions without max_tokens
    max_batch_size: int = 16  # rows per engine call; also the most rows one request may carry
    max_wait_ms: float = 10.0  # how long a batch waits to fill up
    max_queue: int = 256  # rows waiting for the engine; beyond: 503
    max_streams: int = 32  # concurrent streaming responses; beyond: 503
    workers: int = 1  # engine calls in flight (the engine interleaves them step by step)
