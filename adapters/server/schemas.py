"""Request and response models of the HTTP API, shaped like OpenAI's (and vLLM's) where one exists.

Unknown request fields are ignored (clients send ``user``, ``service_tier``, ``metadata`` ...).
Options that would change the answer and that the server cannot honour are declared so that only
their no-op values validate (``logit_bias: {}``, ``response_format: {"type": "text"}``, ``tools``
with ``tool_choice: "none"``, ``best_of`` equal to ``n``) and any other value is a 422 naming the
field: never silently ignored, and the spec says exactly what is accepted, so generated clients
and fuzzers are not misled. Limits that depend on the server's configuration (max_tokens, prompt length, rows per
request, body size) are checked by the server, so this spec stays the same for every deployment.

Every string of a request body must be valid Unicode: JSON may spell a lone UTF-16 surrogate
(``"\\ud800"``), which no tokenizer, store or response encoder can take, so it is refused with a
422 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from pydantic_core import PydanticCustomError

MAX_SEED = 2**63 - 1
MAX_TOP_LOGPROBS = 20  # vLLM's default cap on alternatives per position
# A store ref or ensemble ref, never a filesystem path: no slash or backslash, not starting with
# '.' or '~', no drive letter ('C:'). The same rule as ``adapters.pathlike.looks_like_path``,
# written without look-arounds so that fuzzers can generate from it.
NOT_A_PATH = r"^(?:[^./\\~A-Za-z][^/\\]*|[A-Za-z](?:[^:/\\][^/\\]*)?)$"
Prompt = Annotated[str, Field(min_length=1)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Body(_Request):
    """A whole request body: every string in it is checked for lone surrogates first."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = _surrogate(data, ())
        if where is not None:
            field = ".".join(str(p) for p in where) or "body"
            raise PydanticCustomError(
                "invalid_unicode", "{field} holds a lone UTF-16 surrogate (such as \\ud800), which is not valid "
                "Unicode; send UTF-8 text (a character outside the BMP is one escaped pair, e.g. \\ud83d\\ude00)",
                {"field": field})
        return data


def _surrogate(value: Any, path: tuple) -> tuple | None:
    """The path to the first string (key or value) holding a lone surrogate, else None."""
    stack = [(value, path)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path
        elif isinstance(value, dict):
            for key, item in value.items():  # a key is checked before any path that names it
                stack.append((item, (*path, key)))
                stack.append((key, path))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
    return None


def unsupported(field: str, message: str) -> PydanticCustomError:
    """A request option this server refuses as sent (the 422 names ``field``)."""
    return PydanticCustomError("unsupported_option", message, {"field": field})


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
class StreamOptions(_Request):
    include_usage: bool = False


class ResponseFormat(_Request):
    type: Literal["text"] = Field(description="only text: JSON mode and JSON schemas are not enforced here")


class _Sampling(_Body):
    model: str = Field(min_length=1, max_length=300, description="an adapter ref (name, name@3, name@alias, "
                       "sha256:<hex>) or the base model's name for the bare base")
    max_tokens: int | None = Field(None, ge=1, description="tokens to generate (at most the server's limit)")
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16, description="completions per prompt")
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(None, description="up to 4 stop strings")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = Field(None, max_length=0, description="not supported: only null or {}")
    presence_penalty: float | None = Field(None, ge=0, le=0, description="not supported: only null or 0")
    frequency_penalty: float | None = Field(None, ge=0, le=0, description="not supported: only null or 0")
    user: str | None = None


# ---- /v1/completions -----------------------------------------------------------------------------
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
TopK = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)]


class CompletionRequest(_Sampling):
    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1)] | TokenIds | Annotated[
        list[TokenIds], Field(min_length=1)] = Field(
        description="raw text (no chat template), a list of texts, token ids, or a list of token-id lists")
    echo: bool = Field(False, description="return the prompt before the completion (with logprobs: scored)")
    logprobs: TopK | None = Field(None, description="log-probabilities of the tokens, with this many likeliest "
                                  "alternatives at each position (0: none)")
    max_tokens: int | None = Field(16, ge=0, description="tokens to generate (at most the server's limit; 0 only "
                                   "with echo)")
    best_of: int | None = Field(None, ge=1, le=16, description="only null or equal to n: candidates are not "
                                "ranked by this server")
    suffix: str | None = Field(None, max_length=0, description="not supported (no insertion): only null or \"\"")

    @model_validator(mode="after")
    def _no_ranking(self) -> CompletionRequest:
        # best_of > n asks for the n likeliest of best_of samples: returning n plain samples instead
        # would be a silently different answer.
        if self.best_of is not None and self.best_of != self.n:
            raise unsupported("best_of", f"best_of={self.best_of} with n={self.n} is not supported (this server "
                              "does not rank candidates); leave best_of out or send it equal to n")
        return self


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy completions format: one entry per token shown (the prompt's too with echo;
    the first prompt token has no log-probability, nothing comes before it)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None


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
    logprobs: bool | None = Field(None, description="log-probabilities of the generated tokens")
    top_logprobs: TopK | None = Field(None, description="with logprobs: this many likeliest tokens at each position")
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = Field(None, description="accepted only with tool_choice \"none\": "
                                               "this server makes no tool calls")
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = Field(None, description="the deprecated form of tools: accepted only "
                                                   "with function_call \"none\"")
    function_call: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _no_tool_calls(self) -> ChatCompletionRequest:
        # With tools on offer a model is prompted with them and may answer with a call: answering
        # plain text instead would be a silently different answer, so the request is refused.
        if self.tools and self.tool_choice != "none":
            raise unsupported("tools", "tools are not supported by this server (it makes no tool calls); leave "
                              "tools out, or send tool_choice \"none\" to have them ignored")
        if self.functions and self.function_call != "none":
            raise unsupported("functions", "functions are not supported by this server (it makes no function "
                              "calls); leave functions out, or send function_call \"none\" to have them ignored")
        if self.top_logprobs and not self.logprobs:
            raise unsupported("top_logprobs", "top_logprobs needs logprobs: true (as in OpenAI's API)")
        return self


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


# ---- stream=true: the chunks of the server-sent events (serialised in this field order) ------------
class ChatDelta(BaseModel):
    """The new part of the assistant's message; fields left at None are left out of the chunk."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer
    def _present(self) -> dict[str, Any]:
        return {k: v for k, v in (("role", self.role), ("content", self.content)) if v is not None}


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class CompletionChunkChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class StreamChunk(BaseModel):
    """One event of a stream: ``object`` is ``chat.completion.chunk`` or ``text_completion``; the
    last event before ``[DONE]`` has no choices and the usage (with ``include_usage``)."""

    id: str
    object: Literal["chat.completion.chunk", "text_completion"]
    created: int
    model: str
    choices: list[ChatChunkChoice] | list[CompletionChunkChoice]
    usage: Usage | None = None

    @model_serializer(mode="wrap")
    def _without_absent_usage(self, handler) -> dict[str, Any]:
        data = handler(self)
        if self.usage is None:
            data.pop("usage", None)
        return data


class StreamError(BaseModel):
    """The event a stream ends with when generation fails after its first piece."""

    message: str
    type: str
    code: str | None = None


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
class ClassifyRequest(_Body):
    model: str = Field(min_length=1, max_length=300, description="a classification adapter's ref")
    input: str | Annotated[list[str], Field(min_length=1)] = Field(description="one text or a list of texts")


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
class AdapterRequest(_Body):
    adapter: str = Field(min_length=1, max_length=300, pattern=NOT_A_PATH,
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


# ---- the tokenizer, as vLLM serves it (lm-evaluation-harness's remote tokenizer reads these) ---------
class TokenizeRequest(_Body):
    prompt: str = Field(description="the text to tokenize, as given (no chat template)")
    add_special_tokens: bool = Field(True, description="add the tokenizer's special tokens (BOS ...)")
    model: str | None = Field(None, max_length=300, description="ignored: every adapter shares the base's tokenizer")


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int | None = Field(description="the base's context length, when it records one")


class DetokenizeRequest(_Body):
    tokens: list[Annotated[int, Field(ge=0)]] = Field(description="token ids of the base's vocabulary")
    model: str | None = Field(None, max_length=300, description="ignored: every adapter shares the base's tokenizer")


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfo(_Response):
    tokenizer_class: str
    eos_token: str | None
    bos_token: str | None
    pad_token: str | None
    unk_token: str | None
    chat_template: str | None
    model_max_length: int | None
    vocab_size: int
