"""Bad requests get the right 4xx in the JSON error shape, never a 5xx: schemathesis against the
app's own OpenAPI spec over real HTTP (bounded), then malformed JSON, unknown adapters, an adapter
trained on another base (409), oversize prompts (422), a full queue (503); /health stays OK."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from support.server import API_KEY, serve_in_thread, shared_server

pytestmark = pytest.mark.timeout(150)
REAL = ["chat-a", "chat-p@1", "sentiment", "tiny-llama"]


@pytest.fixture
def served(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv):
    return shared_server(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv)


def post(served, path, body=None, content=None, headers=None):
    h = {**served.headers(), **(headers or {})}
    return httpx.post(f"{served.url}{path}", json=body, content=content, headers=h, timeout=30)


def assert_error(r, status, code=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str) and "code" in err
    if code:
        assert err["code"] == code, err


OPERATIONS = {"POST /v1/chat/completions", "POST /v1/completions", "POST /v1/classify", "GET /v1/models",
              "POST /v1/adapters/load", "POST /v1/adapters/unload", "GET /health", "GET /metrics",
              "POST /tokenize", "POST /detokenize", "GET /tokenizer_info"}


@pytest.mark.timeout(120, func_only=True)  # the run's bound, without a wall-clock assert
def test_schemathesis_finds_no_server_errors(served):
    """Valid and invalid inputs for every operation of the spec. A phase that cannot run (no
    strategy, no example found) fails the test; only an operation that takes no input at all
    has no invalid inputs, and the spec must say so (no parameters, no body)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    ran, without_input = [], set()
    picks = [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        takes_input = bool(operation.body) or any(True for _ in operation.iter_parameters())
        if not takes_input:
            without_input.add(operation.label)
        for mode, examples in ((GenerationMode.POSITIVE, 20), (GenerationMode.NEGATIVE, 10)):
            if mode is GenerationMode.NEGATIVE and not takes_input:
                continue  # nothing to make invalid
            strategy = operation.as_strategy(generation_mode=mode)

            @given(case=strategy)
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            def check(case):
                # Half the valid bodies name a real model, so generation and classification run too.
                # (check() runs below, within this iteration: `mode` is still its own.)
                if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:  # noqa: B023
                    picks[0] += 1
                    case.body["model"] = (REAL + [case.body["model"]] * len(REAL))[picks[0] % (2 * len(REAL))]
                response = case.call(base_url=served.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
                case.validate_response(response, checks=checks)

            check()  # Unsatisfiable (no example found) or any other error fails the test
            ran.append((operation.label, mode.value))
    assert without_input == {"GET /v1/models", "GET /health", "GET /metrics", "GET /tokenizer_info"}
    assert sorted(ran) == sorted([(label, "positive") for label in OPERATIONS]
                                 + [(label, "negative") for label in OPERATIONS - without_input])
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"


def test_malformed_and_invalid_requests_are_422(served):
    assert_error(post(served, "/v1/chat/completions", content=b'{"model": "chat-a", "messages": [',
                      headers={"content-type": "application/json"}), 422, "invalid_json")
    assert_error(post(served, "/v1/completions", content=b"\xff\xfe", headers={"content-type": "application/json"}),
                 422)
    assert_error(post(served, "/v1/completions", body=[1, 2]), 422, "invalid_request")
    assert_error(post(served, "/v1/chat/completions", body={"model": "chat-a"}), 422, "invalid_request")
    assert_error(post(served, "/v1/chat/completions", body={"model": "chat-a", "messages": []}), 422)
    assert_error(post(served, "/v1/completions", body={"model": "chat-a", "prompt": "x", "temperature": -1}), 422)
    assert_error(post(served, "/v1/completions", body={"model": "chat-a", "prompt": "x", "top_p": 0}), 422)
    assert_error(post(served, "/v1/completions", body={"model": "chat-a", "prompt": "x", "logprobs": -1}), 422,
                 "invalid_request")
    assert_error(post(served, "/v1/completions", body={"model": "chat-a", "prompt": ""}), 422, "empty_prompt")
    assert_error(post(served, "/v1/completions", body={"model": "chat-a", "prompt": ["a", "b"], "stream": True}),
                 422, "unsupported")
    assert_error(post(served, "/v1/classify", body={"model": "sentiment", "input": []}), 422, "empty_input")
    assert_error(post(served, "/v1/classify", body={"model": "tiny-llama", "input": "x"}), 422, "wrong_task")
    assert_error(post(served, "/v1/adapters/load", body={"adapter": "tiny-llama"}), 422, "not_an_adapter")
    assert_error(httpx.get(f"{served.url}/v1/nothing-here", headers=served.headers()), 404)
    assert_error(httpx.get(f"{served.url}/v1/completions", headers=served.headers()), 405)


def test_unknown_adapters_are_404_and_another_base_is_409(served):
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/v1/completions", {"prompt": "hi"}), ("/v1/classify", {"input": "hi"})):
        for model in ("no-such-adapter", "chat-a@99", "chat-a@nosuchalias", "sha256:0123456789abcdef"):
            assert_error(post(served, path, {"model": model, **body}), 404, "model_not_found")
        r = post(served, path, {"model": "bert-sentiment", **body})
        assert_error(r, 409, "base_mismatch")
        assert "other weights" in r.json()["error"]["message"]
    assert_error(post(served, "/v1/adapters/load", {"adapter": "bert-sentiment"}), 409, "base_mismatch")
    assert "bert-sentiment" not in {m["id"] for m in httpx.get(f"{served.url}/v1/models",
                                                                headers=served.headers()).json()["data"]}
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"


def test_oversize_prompts_and_requests_are_422(served):
    def chat(text, **kw):
        return {"model": "chat-a", "messages": [{"role": "user", "content": text}], **kw}

    assert_error(post(served, "/v1/chat/completions", chat("pizza " * 400)), 422, "prompt_too_long")  # > 2000 chars
    assert_error(post(served, "/v1/chat/completions", chat("pizza " * 300)), 422, "prompt_too_long")  # > 128 tokens
    assert_error(post(served, "/v1/completions", {"model": "chat-a", "prompt": "hi", "max_tokens": 25}), 422,
                 "max_tokens_exceeded")
    assert_error(post(served, "/v1/chat/completions", chat("hi", max_completion_tokens=1000)), 422,
                 "max_tokens_exceeded")
    assert_error(post(served, "/v1/completions", {"model": "chat-a", "prompt": ["hi"] * 9, "n": 2}), 422,
                 "too_many_inputs")
    assert_error(post(served, "/v1/classify", {"model": "sentiment", "input": ["fine"] * 17}), 422, "too_many_inputs")
    assert_error(post(served, "/v1/classify", {"model": "sentiment", "input": "good " * 500}), 422, "prompt_too_long")
    ok = post(served, "/v1/completions", {"model": "chat-a", "prompt": "hi", "max_tokens": 24, "temperature": 0})
    assert ok.status_code == 200
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"


def test_a_full_queue_is_503_and_the_server_recovers(served):
    """A second app on the same engine with a queue of 2 rows: a burst gets 503s, never 5xx
    of another kind, and the server answers normally afterwards."""
    from adapters.server import Limits, create_app

    app = create_app(served.engine, limits=Limits(max_queue=2, max_batch_size=1, max_wait_ms=0, max_tokens=24),
                     store_root=served.root, served_name="tiny-llama")
    port, stop = serve_in_thread(app)
    url = f"http://127.0.0.1:{port}"
    try:
        async def burst():
            async with httpx.AsyncClient(timeout=60) as client:
                body = {"model": "chat-a", "prompt": "hello", "max_tokens": 24, "temperature": 0}
                return await asyncio.gather(*(client.post(f"{url}/v1/completions", json=body) for _ in range(24)))

        codes = [r.status_code for r in asyncio.run(burst())]
        assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
        r503 = next(r for r in asyncio.run(burst()) if r.status_code == 503)
        assert r503.json()["error"]["type"] == "overloaded_error"
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        ok = httpx.post(f"{url}/v1/completions", json={"model": "chat-a", "prompt": "hi", "max_tokens": 2}, timeout=30)
        assert ok.status_code == 200
        assert "adapters_rejected_overloaded_total" in httpx.get(f"{url}/metrics").text
    finally:
        stop()


def test_a_damaged_store_is_503_with_what_to_do_and_health_stays_up(tmp_path, tiny_llama):
    """The request is not at fault when the server's own store index cannot be read: 503 (retry
    once it is repaired), the message names the file and the way out, and the server lives on."""
    from adapters.runtime import Engine
    from adapters.server import create_app, store_resolver
    from adapters_store import Store

    root = tmp_path / "store"
    Store(root).close()
    engine = Engine(str(tiny_llama), quant="none", device="cpu", resolver=store_resolver(root))
    app = create_app(engine, api_key=None, store_root=root, served_name="tiny-llama")
    port, stop = serve_in_thread(app)
    try:
        (root / "store.db").write_bytes(b"\x00" * 100 + b"not a database" * 100)
        url = f"http://127.0.0.1:{port}"
        for path, body in (("/v1/completions", {"model": "chat-a@1", "prompt": "hi"}),
                           ("/v1/classify", {"model": "chat-a", "input": "hi"})):
            r = httpx.post(url + path, json=body, timeout=30)
            assert_error(r, 503, "store_damaged")
            assert "store.db" in r.json()["error"]["message"] and "adapters import" in r.json()["error"]["message"]
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 200  # what is resident, not the store
        r = httpx.post(url + "/v1/completions", json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 2},
                       timeout=30)
        assert r.status_code == 200, r.text  # the bare base needs no store
    finally:
        stop()
