"""LangChain's ``ChatOpenAI``, unchanged, against ``adapters serve``: ``invoke`` and ``stream`` reach
the adapter named as the model and give what the server's own chat endpoint gives; a field the
server refuses reaches LangChain as its 422, not as a silently different answer."""

import httpx
import pytest

from support.server import API_KEY, shared_server

QUESTION = "What is your favourite colour?"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv):
    return shared_server(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv)


def _chat(served, model, **kw):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=model, base_url=f"{served.url}/v1", api_key=API_KEY, temperature=0, max_tokens=8,
                      max_retries=0, timeout=60, **kw)


def _direct(served, model) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "temperature": 0}
    r = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=served.headers(), timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("role", ["A", "P"])
def test_invoke_and_stream_reach_the_adapter(served, role):
    model = served.refs[role]
    expected = _direct(served, model)
    chat = _chat(served, model)
    answer = chat.invoke(QUESTION)
    assert answer.content == expected and answer.content
    assert answer.usage_metadata["output_tokens"] > 0
    pieces = [chunk.content for chunk in chat.stream(QUESTION)]
    assert "".join(pieces) == expected and len([p for p in pieces if p]) > 1
    # Another adapter answers differently: the model field is honoured, not ignored.
    other = served.refs["B" if role == "A" else "A"]
    assert _chat(served, other).invoke(QUESTION).content == _direct(served, other) != expected


def test_a_refused_field_reaches_langchain_as_the_servers_422(served):
    import openai

    chat = _chat(served, served.refs["A"], model_kwargs={"response_format": {"type": "json_object"}})
    with pytest.raises(openai.UnprocessableEntityError) as err:
        chat.invoke(QUESTION)
    assert "response_format" in str(err.value)
