"""A bounded load test: 64 concurrent clients, 3 requests each, over four adapters, the bare base, a
classifier and streams; no errors, every answer equal to the engine's answer alone, bounded time,
and the batcher really batched (rows of several adapters in one engine call)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from support.server import shared_server

pytestmark = pytest.mark.timeout(150)
CLIENTS, REQUESTS, NEW = 64, 3, 4
PROMPTS = ["what is your favourite food?", "hello, how are you today?", "where did john fly?"]
MODELS = ["chat-a", "chat-b", "chat-p", "tiny-llama"]
TEXTS = ["a gripping and beautifully acted drama", "a dull, lifeless mess"]


@pytest.fixture
def served(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv):
    return shared_server(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv)


@pytest.mark.timeout(180, func_only=True)  # the run's bound, without a wall-clock assert
def test_64_concurrent_clients(served):
    engine = served.engine
    expected = {(m, p): engine.generate([p], [None if m == "tiny-llama" else m], max_new_tokens=NEW,
                                        temperature=0)[0].text for m in MODELS for p in PROMPTS}
    labels = {t: r["label"] for t, r in zip(TEXTS, engine.classify(TEXTS, ["sentiment"] * len(TEXTS)))}
    stats = served.server.batcher.stats
    batches_before, multi_before = stats.batches, stats.multi_adapter_batches

    async def client(i: int, http: httpx.AsyncClient) -> list[str]:
        problems = []
        for j in range(REQUESTS):
            k = i * REQUESTS + j
            model, prompt = MODELS[k % len(MODELS)], PROMPTS[(k // len(MODELS)) % len(PROMPTS)]
            chat = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": NEW,
                    "temperature": 0}
            if k % 8 == 7:  # a classification request
                text = TEXTS[k % 2]
                r = await http.post("/v1/classify", json={"model": "sentiment", "input": text})
                if r.status_code != 200 or r.json()["data"][0]["label"] != labels[text]:
                    problems.append(f"classify {r.status_code} {r.text[:200]}")
            elif k % 8 == 3:  # a stream
                pieces = []
                async with http.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as r:
                    if r.status_code != 200:
                        problems.append(f"stream {r.status_code}")
                        continue
                    async for line in r.aiter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            event = json.loads(line[6:])
                            if "error" in event:
                                problems.append(f"stream error {event}")
                            else:
                                pieces.append(event["choices"][0]["delta"].get("content") or "")
                if "".join(pieces) != expected[model, prompt]:
                    problems.append(f"stream {model} {prompt!r}: {''.join(pieces)!r}")
            else:
                r = await http.post("/v1/chat/completions", json=chat)
                if r.status_code != 200:
                    problems.append(f"chat {r.status_code} {r.text[:200]}")
                elif r.json()["choices"][0]["message"]["content"] != expected[model, prompt]:
                    problems.append(f"chat {model} {prompt!r}: wrong answer")
        return problems

    async def run():
        # Idle pooled connections expire (client side) well before the server closes them (30 s).
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS, keepalive_expiry=5)
        async with httpx.AsyncClient(base_url=served.url, headers=served.headers(), timeout=90, limits=limits) as http:
            return await asyncio.gather(*(client(i, http) for i in range(CLIENTS)))

    started = time.monotonic()
    problems = [p for ps in asyncio.run(run()) for p in ps]
    elapsed = time.monotonic() - started
    assert problems == [], problems[:5]
    batches = stats.batches - batches_before
    assert batches < CLIENTS * REQUESTS * 0.8, "the batcher should merge concurrent requests"
    assert stats.multi_adapter_batches > multi_before
    health = httpx.get(f"{served.url}/health").json()
    assert health["status"] == "ok" and health["queued_rows"] == 0 and health["active_streams"] == 0
    print(f"\n{CLIENTS * REQUESTS} requests in {elapsed:.1f}s, {batches} batches, largest {stats.largest_batch} rows")
