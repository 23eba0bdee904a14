"""What one request may ask for, and how the server batches: one model for ``create_app`` and for
the ``limits:`` section of a serve config (``adapters serve --config``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """What one request may ask for; over a limit is a 422 (a body over max_body_bytes a 413), a
    full queue a 503. Each is checked before the work it bounds: the body size before it is read
    whole, the row count before any row is tokenized, the characters before the tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # request body (Content-Length, or counted while it streams in); beyond: 413
    max_body_bytes: int = Field(4 * 2**20, ge=1)
    max_prompt_chars: int = Field(32_000, ge=1)  # per prompt, message list or classify input
    max_prompt_tokens: int = Field(2048, ge=1)  # also capped by the base's context length
    max_tokens: int = Field(512, ge=1)  # generated tokens per completion
    default_max_tokens: int = Field(128, ge=1)  # chat completions without max_tokens
    max_batch_size: int = Field(16, ge=1)  # rows per engine call; also the most rows one request may carry
    max_wait_ms: float = Field(10.0, ge=0)  # how long a batch waits to fill up
    max_queue: int = Field(256, ge=1)  # rows waiting for the engine; beyond: 503
    max_streams: int = Field(32, ge=1)  # concurrent streaming responses; beyond: 503
    workers: int = Field(1, ge=1)  # engine calls in flight (the engine interleaves them step by step)
