"""Ensemble refs over real HTTP: ``model="ensemble:…"`` in /v1/classify and /v1/completions (plain
and streamed) answers what the engine answers for that ensemble, on a real uvicorn server."""

from __future__ import annotations

import json

import httpx
import pytest

from support.merge import stored
from support.server import API_KEY, serve_in_thread

pytestmark = pytest.mark.timeout(180)
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def server(tmp_path, tiny_llama, gen_loras, llama_classifier, llama_prefix_classifier):
    from adapters.runtime import Engine
    from adapters.server import Limits, create_app, store_resolver

    root = tmp_path / "store"
    refs = {"a": stored(gen_loras["A"], "chat-a", root), "p": stored(gen_loras["P"], "chat-p", root),
            "cls": stored(llama_classifier, "senti", root),
            "cls-prefix": stored(llama_prefix_classifier, "senti-prefix", root)}
    engine = Engine(str(tiny_llama), quant="none", device="cpu", resolver=store_resolver(root))
    app = create_app(engine, api_key=API_KEY, store_root=root, served_name="tiny-llama",
                     limits=Limits(max_tokens=16, max_wait_ms=5))
    port, stop = serve_in_thread(app)
    try:
        yield f"http://127.0.0.1:{port}", engine, refs
    finally:
        stop()


def test_ensemble_refs_over_http(server):
    url, engine, refs = server
    texts = ["a gripping, beautifully acted film", "a dull mess"]
    ensemble = f"ensemble:{refs['cls']}+{refs['cls-prefix']}"
    r = httpx.post(f"{url}/v1/classify", json={"model": ensemble, "input": texts}, headers=HEADERS, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["model"] == ensemble
    members = {ref: engine.classify(texts, adapter=ref) for ref in (refs["cls"], refs["cls-prefix"])}
    for i, row in enumerate(sorted(got["data"], key=lambda d: d["index"])):
        for label, p in row["probabilities"].items():
            want = sum(members[m][i]["probabilities"][label] for m in members) / 2
            assert abs(p - want) < 1e-6
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)

    generator = f"ensemble:{refs['a']}*0.7+{refs['p']}*0.3"
    body = {"model": generator, "prompt": "what is your favourite food?", "max_tokens": 8, "temperature": 0}
    r = httpx.post(f"{url}/v1/completions", json=body, headers=HEADERS, timeout=60)
    assert r.status_code == 200, r.text
    want = engine.generate([body["prompt"]], [generator], max_new_tokens=8, raw=True)[0]
    assert r.json()["choices"][0]["text"] == want.text
    assert r.json()["usage"]["completion_tokens"] == want.tokens

    pieces = []
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, headers=HEADERS,
                      timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces += [c.get("text", "") for c in json.loads(line[6:])["choices"]]
    assert "".join(pieces) == want.text

    wrong = httpx.post(f"{url}/v1/classify", json={"model": generator, "input": "x"}, headers=HEADERS)
    assert wrong.status_code == 422 and "not a classifier" in wrong.json()["error"]["message"]
    mixed = httpx.post(f"{url}/v1/classify", json={"model": f"ensemble:{refs['cls']}+{refs['a']}", "input": "x"},
                       headers=HEADERS)
    assert mixed.status_code == 422, mixed.text
    unknown = httpx.post(f"{url}/v1/classify", json={"model": f"ensemble:{refs['cls']}+nope@1", "input": "x"},
                         headers=HEADERS)
    assert unknown.status_code == 404, unknown.text
