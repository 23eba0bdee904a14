"""The OpenAI contract, field by field, through the official ``openai`` SDK (``extra_body`` where the
SDK has no parameter) against a real server over the real Engine on a tiny Llama: every field is
honoured, checked against the engine's own answer or against the other fields' answers, or refused
with a 422 that names it; and the OpenAPI spec lists each of them."""

from __future__ import annotations

import httpx
import openai
import pytest

from adapters.runtime.requests import GenerationRequest

from support.server import shared_server

pytestmark = pytest.mark.timeout(180)

HELLO = "hello, how are you today?"
FOOD = "what is your favourite food?"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv):
    return shared_server(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv)


@pytest.fixture(scope="module")
def client(served):
    return served.openai()


def ids_of(served, text: str) -> list[int]:
    return served.engine.tokenizer(text, add_special_tokens=False)["input_ids"]


def engine_completion(served, text: str, adapter="chat-a", n=8, **options):
    """What the engine answers for this raw prompt alone (the completions endpoint's request)."""
    (result,) = served.engine.run([GenerationRequest(text, adapter, max_new_tokens=n, raw=True,
                                                     prompt_ids=ids_of(served, text), **options)])
    return result


def refused(call, field: str) -> dict:
    with pytest.raises(openai.UnprocessableEntityError) as err:
        call()
    body = err.value.response.json()["error"]
    assert body["param"] == field and field in body["message"], body
    return body


# ---- /v1/completions ----------------------------------------------------------------------------
def test_token_id_prompts_answer_as_their_texts(served, client):
    """``prompt`` as one list of token ids or a list of them: the same answers as the texts, choices
    in prompt order, usage counting every prompt's tokens and every generated token."""
    hello, food = ids_of(served, HELLO), ids_of(served, FOOD)
    as_text = client.completions.create(model="chat-a", prompt=HELLO, max_tokens=8, temperature=0)
    as_ids = client.completions.create(model="chat-a", prompt=hello, max_tokens=8, temperature=0)
    assert as_ids.choices[0].text == as_text.choices[0].text == engine_completion(served, HELLO).text
    assert as_ids.usage.prompt_tokens == len(hello)

    both = client.completions.create(model="chat-a", prompt=[hello, food], max_tokens=8, temperature=0)
    want = [engine_completion(served, HELLO), engine_completion(served, FOOD)]
    assert [c.index for c in both.choices] == [0, 1]
    assert [c.text for c in both.choices] == [w.text for w in want]
    assert both.usage.prompt_tokens == len(hello) + len(food)
    assert both.usage.completion_tokens == sum(w.tokens for w in want)
    assert both.usage.total_tokens == both.usage.prompt_tokens + both.usage.completion_tokens


def test_n_choices_greedy_equal_and_seeded_samples_differ(served, client):
    one = client.completions.create(model="chat-b", prompt=HELLO, max_tokens=8, temperature=0)
    three = client.completions.create(model="chat-b", prompt=HELLO, max_tokens=8, temperature=0, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert [c.text for c in three.choices] == [one.choices[0].text] * 3
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt is counted once

    # Several prompts x n: OpenAI's order, prompt by prompt (index = prompt * n + choice).
    grid = client.completions.create(model="chat-b", prompt=[HELLO, FOOD], max_tokens=6, temperature=0, n=2)
    singles = [client.completions.create(model="chat-b", prompt=p, max_tokens=6, temperature=0).choices[0].text
               for p in (HELLO, FOOD)]
    assert [(c.index, c.text) for c in grid.choices] == [(0, singles[0]), (1, singles[0]), (2, singles[1]),
                                                         (3, singles[1])]

    # Seeded sampling: choice i is the answer of seed + i, so the choices differ and repeat.
    kw = {"model": "chat-b", "prompt": HELLO, "max_tokens": 12, "temperature": 1.5, "seed": 7}
    sampled = [c.text for c in client.completions.create(n=3, **kw).choices]
    assert len(set(sampled)) > 1, sampled
    assert sampled == [c.text for c in client.completions.create(n=3, **kw).choices]
    assert sampled[1] == client.completions.create(**{**kw, "seed": 8}).choices[0].text

    chat = {"model": "chat-b", "messages": [{"role": "user", "content": HELLO}], "max_tokens": 8}
    alone = client.chat.completions.create(temperature=0, **chat).choices[0].message.content
    assert [c.message.content for c in client.chat.completions.create(temperature=0, n=3, **chat).choices] \
        == [alone] * 3
    texts = [c.message.content for c in client.chat.completions.create(temperature=1.5, seed=3, n=3, **chat).choices]
    assert len(set(texts)) > 1, texts


def test_echo_with_logprobs_scores_the_prompt_in_every_choice(served, client):
    """``echo`` + an integer ``logprobs`` (lm-evaluation-harness's loglikelihood request), also with
    n > 1 and with token-id prompts: each choice carries the prompt, scored as the engine scores it."""
    ids = ids_of(served, FOOD)
    want = engine_completion(served, FOOD, n=1, echo=True, logprobs=True, top_logprobs=2)
    out = client.completions.create(model="chat-a", prompt=FOOD, max_tokens=1, temperature=0, echo=True, logprobs=2,
                                    n=2)
    assert [c.index for c in out.choices] == [0, 1]
    for choice in out.choices:
        lp = choice.logprobs
        assert choice.text == FOOD + want.text
        assert len(lp.tokens) == len(ids) + 1 and "".join(lp.tokens[:len(ids)]) == FOOD
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.token_logprobs[1:len(ids)] == pytest.approx([s for _, s, _ in want.prompt_logprobs[1:]], abs=1e-5)
        assert lp.token_logprobs[-1] == pytest.approx(want.logprobs[0], abs=1e-5)
        assert all(len(top) == 2 for top in lp.top_logprobs[1:])
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert out.choices[0].logprobs == out.choices[1].logprobs
    assert out.usage.prompt_tokens == len(ids)

    # Token-id prompts, two of them: the prompt's text is shown before each completion.
    grid = client.completions.create(model="chat-a", prompt=[ids, ids_of(served, HELLO)], max_tokens=1, echo=True,
                                     logprobs=0, temperature=0, n=2)
    assert [c.text.startswith(p) for c, p in zip(grid.choices, [FOOD, FOOD, HELLO, HELLO])] == [True] * 4
    assert all(top == {} for c in grid.choices for top in c.logprobs.top_logprobs[1:])
    # An ensemble mixes its members' next-token distributions; it has no prompt scores of its own.
    refused(lambda: client.completions.create(model="ensemble:chat-a+chat-b", prompt=FOOD, max_tokens=1, echo=True,
                                              logprobs=0), "echo")
    # Echo without logprobs: the text only.
    plain = client.completions.create(model="chat-a", prompt=FOOD, max_tokens=1, temperature=0, echo=True)
    assert plain.choices[0].text == FOOD + want.text and plain.choices[0].logprobs is None


def test_max_tokens_zero_and_one(served, client):
    one = client.completions.create(model="chat-a", prompt=HELLO, max_tokens=1, temperature=0)
    assert one.choices[0].text == engine_completion(served, HELLO, n=1).text
    assert one.usage.completion_tokens <= 1 and one.choices[0].finish_reason in ("stop", "length")
    # 0 with echo scores the prompt and generates nothing.
    zero = client.completions.create(model="chat-a", prompt="the cat sat", max_tokens=0, logprobs=0, echo=True)
    choice = zero.choices[0]
    assert choice.text == "the cat sat" and zero.usage.completion_tokens == 0
    assert choice.logprobs.token_logprobs[0] is None and all(top == {} for top in choice.logprobs.top_logprobs[1:])
    assert "".join(choice.logprobs.tokens) == "the cat sat"
    # Echo without logprobs shows the prompt only.
    shown = client.completions.create(model="chat-a", prompt="the cat sat", max_tokens=0, echo=True)
    assert shown.choices[0].text == "the cat sat" and shown.choices[0].logprobs is None
    assert shown.usage.completion_tokens == 0
    # 0 without echo would answer nothing at all.
    refused(lambda: client.completions.create(model="chat-a", prompt=HELLO, max_tokens=0), "max_tokens")


def test_streams_end_with_a_usage_chunk_equal_to_the_whole_answers_usage(served, client):
    """``stream_options.include_usage``: one last chunk with no choices and the usage, on both
    endpoints; without it, no chunk carries usage."""
    messages = [{"role": "user", "content": FOOD}]
    streams = {
        "chat": (lambda **kw: client.chat.completions.create(model="chat-b", messages=messages, max_tokens=10,
                                                             temperature=0, **kw),
                 lambda c: c.delta.content or ""),
        "completions": (lambda **kw: client.completions.create(model="chat-p", prompt=FOOD, max_tokens=10,
                                                               temperature=0, **kw),
                        lambda c: c.text),
    }
    for name, (create, text_of) in streams.items():
        whole = create()
        chunks = list(create(stream=True, stream_options={"include_usage": True}))
        assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage, name
        assert all(c.usage is None for c in chunks[:-1]), name
        assert "".join(text_of(c.choices[0]) for c in chunks[:-1]) == (
            whole.choices[0].message.content if name == "chat" else whole.choices[0].text)
        assert all(c.usage is None for c in create(stream=True)), name


def test_what_a_stream_cannot_carry_is_refused_naming_stream(client):
    for call in (lambda: client.completions.create(model="chat-a", prompt=HELLO, n=2, stream=True),
                 lambda: client.completions.create(model="chat-a", prompt=HELLO, logprobs=0, stream=True),
                 lambda: client.chat.completions.create(model="chat-a", messages=[{"role": "user", "content": "x"}],
                                                        logprobs=True, stream=True)):
        refused(call, "stream")


# ---- /v1/chat/completions --------------------------------------------------------------------------
def test_chat_logprobs_are_the_engines(served, client):
    out = client.chat.completions.create(model="chat-b", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                         temperature=0, logprobs=True, top_logprobs=3)
    (want,) = served.engine.generate(["hi"], ["chat-b"], max_new_tokens=4, logprobs=True)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens == want.tokens and content
    assert [e.logprob for e in content] == pytest.approx(want.logprobs[:len(content)], abs=1e-5)
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob >= entry.logprob - 1e-6
        assert entry.logprob == max(t.logprob for t in entry.top_logprobs)  # greedy: the chosen is the best
        assert bytes(entry.bytes).decode() == entry.token
    assert "".join(e.token for e in content) == out.choices[0].message.content
    plain = client.chat.completions.create(model="chat-b", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                           temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == out.choices[0].message.content
    refused(lambda: client.chat.completions.create(model="chat-b", messages=[{"role": "user", "content": "hi"}],
                                                   top_logprobs=2), "top_logprobs")


def test_max_completion_tokens_is_max_tokens(served, client):
    chat = {"model": "chat-a", "messages": [{"role": "user", "content": FOOD}], "temperature": 0}
    new = client.chat.completions.create(max_completion_tokens=3, **chat)
    old = client.chat.completions.create(max_tokens=3, **chat)
    assert new.choices[0].message.content == old.choices[0].message.content
    assert new.usage == old.usage and new.usage.completion_tokens <= 3
    # Both sent: max_completion_tokens wins (it replaced max_tokens in OpenAI's API).
    both = client.chat.completions.create(max_completion_tokens=3, max_tokens=20, **chat)
    assert both.usage.completion_tokens == new.usage.completion_tokens
    body = refused(lambda: client.chat.completions.create(max_completion_tokens=10_000, **chat),
                   "max_completion_tokens")
    assert body["code"] == "max_tokens_exceeded"


def test_content_as_a_list_of_parts_is_their_text(client):
    chat = {"model": "chat-a", "max_tokens": 6, "temperature": 0}
    whole = client.chat.completions.create(messages=[{"role": "user", "content": FOOD}], **chat)
    parts = client.chat.completions.create(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is your "}, {"type": "text", "text": "favourite food?"}]}], **chat)
    assert parts.choices[0].message.content == whole.choices[0].message.content
    assert parts.usage == whole.usage
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = refused(lambda: client.chat.completions.create(
        messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, image]}], **chat),
        "messages.0.content.1.type")
    assert "text" in body["message"]


def test_unknown_fields_are_accepted_and_change_nothing(client):
    chat = {"model": "chat-a", "messages": [{"role": "user", "content": HELLO}], "max_tokens": 6, "temperature": 0}
    plain = client.chat.completions.create(**chat)
    extra = client.chat.completions.create(user="u-1", metadata={"k": "v"}, store=False, service_tier="auto",
                                           extra_body={"some_future_field": {"x": 1}, "top_k": 5}, **chat)
    assert extra.choices[0].message.content == plain.choices[0].message.content
    completion = {"model": "chat-a", "prompt": HELLO, "max_tokens": 6, "temperature": 0}
    assert client.completions.create(user="u-1", extra_body={"some_future_field": 1}, **completion).choices[0].text \
        == client.completions.create(**completion).choices[0].text


def test_options_that_would_change_the_answer_are_refused_naming_the_field(client):
    """Each is honoured in its no-op form and refused otherwise (``response_format``, ``tools`` and
    ``logit_bias`` on chat: tests/test_server_hostile.py)."""
    completion = {"model": "chat-a", "prompt": HELLO, "max_tokens": 2}
    refused(lambda: client.completions.create(logit_bias={"5": 100}, **completion), "logit_bias")
    refused(lambda: client.completions.create(best_of=3, **completion), "best_of")
    refused(lambda: client.completions.create(suffix=" and so on", **completion), "suffix")
    refused(lambda: client.completions.create(presence_penalty=0.5, **completion), "presence_penalty")
    for ok in ({"best_of": 2, "n": 2}, {"suffix": ""}, {"logit_bias": {}}, {"frequency_penalty": 0}):
        assert client.completions.create(**{**completion, **ok}).choices
    chat = {"model": "chat-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    functions = [{"name": "f", "parameters": {"type": "object"}}]
    refused(lambda: client.chat.completions.create(functions=functions, **chat), "functions")
    assert client.chat.completions.create(functions=functions, function_call="none", **chat).choices
    refused(lambda: client.chat.completions.create(frequency_penalty=1.0, **chat), "frequency_penalty")


def test_the_openapi_spec_lists_every_field(served):
    spec = httpx.get(f"{served.url}/openapi.json", timeout=30).json()
    schemas = spec["components"]["schemas"]
    completion = schemas["CompletionRequest"]["properties"]
    assert set(completion) >= {"model", "prompt", "echo", "logprobs", "max_tokens", "n", "best_of", "suffix", "seed",
                               "stream", "stream_options", "stop", "temperature", "top_p", "logit_bias",
                               "presence_penalty", "frequency_penalty", "user"}
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert set(chat) >= {"model", "messages", "logprobs", "top_logprobs", "max_tokens", "max_completion_tokens", "n",
                         "seed", "stream", "stream_options", "response_format", "tools", "tool_choice", "functions",
                         "function_call", "logit_bias", "user"}
    assert set(schemas["StreamOptions"]["properties"]) == {"include_usage"}
    content = schemas["ChatMessage"]["properties"]["content"]["anyOf"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/ContentPart"}} in content
    # The prompt's four shapes: a text, texts, token ids, lists of token ids.
    prompt = completion["prompt"]["anyOf"]
    assert {p["type"] for p in prompt} == {"string", "array"} and len(prompt) == 4
    assert schemas["ResponseFormat"]["properties"]["type"]["const"] == "text"
    # Choices carry logprobs in both formats, and the response lists usage.
    assert "logprobs" in schemas["CompletionChoice"]["properties"]
    assert "logprobs" in schemas["ChatChoice"]["properties"]
    assert set(schemas["CompletionLogprobs"]["properties"]) == {"tokens", "token_logprobs", "top_logprobs",
                                                                "text_offset"}
