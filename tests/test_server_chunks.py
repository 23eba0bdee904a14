"""The bytes of the stream events: clients (the openai SDK, curl scripts) parse them as they are."""

from adapters.server.schemas import ChatChunkChoice, ChatDelta, CompletionChunkChoice, StreamChunk, Usage
from adapters.server.streaming import sse


def chunk(**kw) -> StreamChunk:
    return StreamChunk(id="chatcmpl-1", object="chat.completion.chunk", created=5, model="m", **kw)


def test_chat_chunks_leave_out_what_is_not_said():
    assert sse(chunk(choices=[ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))])) == (
        'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":'
        '[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n')
    assert sse(chunk(choices=[ChatChunkChoice(delta=ChatDelta(content="é"), finish_reason=None)])).count(
        '"delta":{"content":"\\u00e9"}') == 1
    assert '"delta":{},"logprobs":null,"finish_reason":"length"' in sse(
        chunk(choices=[ChatChunkChoice(delta=ChatDelta(), finish_reason="length")]))


def test_completion_and_usage_chunks():
    text = StreamChunk(id="cmpl-1", object="text_completion", created=5, model="m",
                       choices=[CompletionChunkChoice(text="", finish_reason="stop")])
    assert sse(text) == ('data: {"id":"cmpl-1","object":"text_completion","created":5,"model":"m","choices":'
                         '[{"index":0,"text":"","logprobs":null,"finish_reason":"stop"}]}\n\n')
    usage = chunk(choices=[], usage=Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5))
    assert sse(usage).endswith('"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}\n\n')
