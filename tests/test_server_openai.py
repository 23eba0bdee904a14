"""`adapters serve` through the official openai SDK, unchanged, against a real uvicorn server over the
real Engine on a tiny Llama: chat, completions, streaming, models, classify, load/unload, errors,
and requests for different adapters sharing one engine call with each row getting its own answer."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest

from support.server import shared_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def served(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv):
    return shared_server(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv)


def alone(served, prompt, ref, n=8, raw=False):
    """What the engine answers for this one row, called directly."""
    return served.engine.generate([prompt], [ref], max_new_tokens=n, temperature=0, raw=raw)[0]


def test_chat_completion_equals_the_engine(served):
    client = served.openai()
    for ref in ("chat-a", "chat-p", "tiny-llama"):
        reply = client.chat.completions.create(model=ref, messages=[{"role": "user", "content": "hello"}],
                                               max_tokens=8, temperature=0)
        want = alone(served, "hello", None if ref == "tiny-llama" else ref)
        assert reply.choices[0].message.content == want.text
        assert reply.choices[0].message.role == "assistant"
        assert reply.choices[0].finish_reason == want.finish_reason
        assert reply.model == ref and reply.object == "chat.completion"
        assert reply.usage.completion_tokens == want.tokens and reply.usage.prompt_tokens > 0
    # A conversation goes through the base's chat template.
    reply = client.chat.completions.create(model="chat-a", temperature=0, max_tokens=4, messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": [{"type": "text", "text": "food?"}]}])
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_completions_equal_the_engine_and_adapters_differ(served):
    client = served.openai()
    prompts = ["what is your favourite food?", "hello"]
    texts = {}
    for ref in ("chat-a", "chat-b", "tiny-llama"):
        reply = client.completions.create(model=ref, prompt=prompts, max_tokens=8, temperature=0)
        got = [c.text for c in sorted(reply.choices, key=lambda c: c.index)]
        adapter = None if ref == "tiny-llama" else ref
        assert got == [alone(served, p, adapter, raw=True).text for p in prompts]
        texts[ref] = tuple(got)
    assert len(set(texts.values())) == 3, "the adapters must change the answers, or routing proves nothing"


def test_streaming_joins_to_the_whole_answer(served):
    client = served.openai()
    messages = [{"role": "user", "content": "where did john fly?"}]
    full = client.chat.completions.create(model="chat-b", messages=messages, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model="chat-b", messages=messages, max_tokens=12, temperature=0,
                                                 stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason

    whole = client.completions.create(model="chat-p", prompt="hello", max_tokens=10, temperature=0)
    stream = client.completions.create(model="chat-p", prompt="hello", max_tokens=10, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream) == whole.choices[0].text

    # On the wire: OpenAI's SSE framing, ending with [DONE].
    body = {"model": "chat-a", "prompt": "hi", "max_tokens": 3, "temperature": 0, "stream": True}
    r = httpx.post(f"{served.url}/v1/completions", json=body, headers=served.headers(), timeout=30)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line for line in r.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_models_list_shows_base_and_resident_adapters_with_lineage(served):
    client = served.openai()
    client.completions.create(model="chat-a", prompt="hi", max_tokens=1)
    models = {m.id: m for m in client.models.list()}
    base = models["tiny-llama"]
    assert base.parent is None and base.root == "tiny-llama"  # a local base's folder is never shown
    card = models["chat-a"]
    assert card.parent == "tiny-llama" and card.root == "chat-a"
    assert card.version == "chat-a@1" and card.digest.startswith("sha256:") and card.state == "READY"
    assert card.task == "causal-lm" and card.method == "lora"
    assert card.lineage["base"]["id"] == "…/" + Path(served.engine.base.id).name  # names, never paths
    assert card.lineage["base"]["fingerprint"] == served.engine.fingerprint


def test_classify_matches_the_engine(served):
    texts = ["a gripping and beautifully acted drama", "a dull, lifeless mess"]
    r = httpx.post(f"{served.url}/v1/classify", json={"model": "sentiment", "input": texts},
                   headers=served.headers(), timeout=30)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    want = served.engine.classify(texts, ["sentiment"] * 2)
    for got, ref in zip(data, want):
        assert got["label"] == ref["label"] and set(got["probabilities"]) == {"fresh", "rotten"}
        assert all(abs(got["probabilities"][k] - ref["probabilities"][k]) < 1e-6 for k in ref["probabilities"])
    one = httpx.post(f"{served.url}/v1/classify", json={"model": "sentiment", "input": texts[0]},
                     headers=served.headers(), timeout=30).json()
    assert one["data"][0]["label"] == want[0]["label"]
    # A generator is not a classifier, and a classifier does not chat.
    wrong = httpx.post(f"{served.url}/v1/classify", json={"model": "chat-a", "input": "x"}, headers=served.headers())
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "wrong_task"
    with pytest.raises(openai.UnprocessableEntityError):
        served.openai().chat.completions.create(model="sentiment", messages=[{"role": "user", "content": "x"}])


def test_load_and_unload_by_ref_never_by_path(served):
    h = served.headers()
    r = httpx.post(f"{served.url}/v1/adapters/load", json={"adapter": "chat-b@1"}, headers=h, timeout=30)
    assert r.status_code == 200 and r.json()["state"] == "READY" and r.json()["version"] == "chat-b@1"
    assert "chat-b@1" in {m.id for m in served.openai().models.list()}
    r = httpx.post(f"{served.url}/v1/adapters/unload", json={"adapter": "chat-b@1"}, headers=h)
    assert r.status_code == 200 and r.json()["state"] == "UNLOADED"
    assert "chat-b@1" not in {m.id for m in served.openai().models.list()}
    r = httpx.post(f"{served.url}/v1/adapters/unload", json={"adapter": "chat-b@1"}, headers=h)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    adapter_dir = str(served.engine.load("chat-a").path)
    for path in (adapter_dir, "./chat-a", "../x", "~/a", "a/b", "C:\\x"):
        r = httpx.post(f"{served.url}/v1/adapters/load", json={"adapter": path}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["code"] == "path_not_allowed", path
    with pytest.raises(openai.UnprocessableEntityError):
        served.openai().completions.create(model=adapter_dir, prompt="hi", max_tokens=1)
    r = httpx.post(f"{served.url}/v1/adapters/load", json={"adapter": "nope@7"}, headers=h)
    assert r.status_code == 404 and set(r.json()["error"]) >= {"message", "type", "code"}


def test_sdk_errors(served):
    with pytest.raises(openai.NotFoundError) as exc:
        served.openai().chat.completions.create(model="no-such-adapter", messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["type"] == "not_found_error"
    with pytest.raises(openai.AuthenticationError):
        served.openai(api_key="wrong").models.list()
    r = httpx.get(f"{served.url}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{served.url}/health").status_code == 200  # health needs no key
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        served.openai().completions.create(model="chat-a", prompt="hi", max_tokens=10_000)
    assert exc.value.body["code"] == "max_tokens_exceeded"


def test_two_adapters_in_concurrent_requests_share_one_engine_call(served):
    """Concurrent requests for A and B land in one batch, and each gets what the engine gives its
    adapter alone."""
    prompts = {"chat-a": "what is your favourite food?", "chat-b": "hello, how are you today?"}
    want = {ref: alone(served, p, ref, n=6).text for ref, p in prompts.items()}
    stats = served.server.batcher.stats
    for _ in range(5):
        before = stats.multi_adapter_batches
        barrier = threading.Barrier(len(prompts))
        got = {}

        def ask(ref, barrier=barrier, got=got):
            client = served.openai()
            barrier.wait()
            got[ref] = client.chat.completions.create(model=ref, messages=[{"role": "user", "content": prompts[ref]}],
                                                      max_tokens=6, temperature=0).choices[0].message.content

        threads = [threading.Thread(target=ask, args=(ref,)) for ref in prompts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert got == want
        if stats.multi_adapter_batches > before:
            break
    else:
        pytest.fail("requests for two adapters never shared an engine call")
    metrics = httpx.get(f"{served.url}/metrics").text
    # A batch with two distinct adapters shows in the histogram's buckets above 1.
    lines = metrics.splitlines()
    line = next(x for x in lines if x.startswith('adapters_batch_adapters_bucket{kind="generate",le="1.0"}'))
    total = next(x for x in lines if x.startswith('adapters_batch_adapters_count{kind="generate"}'))
    assert float(total.split()[-1]) > float(line.split()[-1])
    assert "adapters_resident_adapters" in metrics and 'adapters_adapter_swaps_total{event="load"}' in metrics
