"""Request and response models of the HTTP API, shaped like OpenAI's (and vLLM's) where one exists.

Unknown request fields are ignored (clients send ``user``, ``logit_bias`` ...); fields we accept
but cannot honour are refused with a 422 by the handlers, never silently dropped when they would
change the answer. Limits that depend on the server's configuration (max_tokens, prompt length)
are checked by the handlers, so this spec stays the same for every deployment.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**63 - 1


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- errors ------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---- sampling options shared by both completion endpoints -----------------------------------------
class _Sampling(_Request):
    model: str = Field(min_length=1, max_length=300, description="an adapter ref (name, name@3, name@alias, "
                       "sha256:<hex>) or the base model's name for the bare base")
    max_tokens: int | None = Field(None, ge=1, description="tokens to generate (at most the server's limit)")
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16, description="completions per prompt")
    stop: str | list[str] | None = Field(None, description="up to 4 stop strings")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None


# ---- /v1/completions -----------------------------------------------------------------------------
class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="raw text (no chat template), or a list of texts")
    echo: bool = False
    max_tokens: int | None = Field(16, ge=1, description="tokens to generate (at most the server's limit)")


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class CompletionResponse(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


# ---- /v1/chat/completions ------------------------------------------------------------------------
class ContentPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="alias of max_tokens")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


# ---- /v1/models ------------------------------------------------------------------------------------
class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "adapters"
    root: str
    parent: str | None = None
    state: str | None = None
    task: str | None = None
    method: str | None = None
    labels: list[str] | None = None
    bytes: int | None = None
    version: str | None = Field(None, description="the store version (name@n) the ref resolved to")
    digest: str | None = None
    lineage: dict[str, Any] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- /v1/classify ------------------------------------------------------------------------------------
class ClassifyRequest(_Request):
    model: str = Field(min_length=1, max_length=300, description="a classification adapter's ref")
    input: str | list[str] = Field(description="one text or a list of texts")


class ClassifyResult(BaseModel):
    index: int
    label: str
    probabilities: dict[str, float]


class ClassifyResponse(_Response):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ClassifyResult]
    usage: Usage


# ---- /v1/adapters/load, /v1/adapters/unload ---------------------------------------------------------
class AdapterRequest(_Request):
    adapter: str = Field(min_length=1, max_length=300,
                         description="a store ref (name, name@3, name@alias, sha256:<hex>); never a path")


class AdapterStatus(_Response):
    adapter: str
    state: str
    task: str | None = None
    method: str | None = None
    labels: list[str] | None = None
    bytes: int | None = None
    version: str | None = None
    digest: str | None = None


# ---- /health ------------------------------------------------------------------------------------------
class Health(_Response):
    status: Literal["ok", "degraded"]
    base: str
    queued_rows: int
    active_streams: int
    resident_adapters: int
