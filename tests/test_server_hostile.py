"""Hostile requests over real HTTP against a real uvicorn server: each gets the right 4xx in the
OpenAI error shape (never a 5xx), the server bounds work before doing it (body size, rows,
characters), stays answering /health while it refuses, remembers a bounded amount per bad name,
never shows a filesystem path, answers only loopback Host names on a loopback bind, and its
OpenAPI spec says exactly what it accepts."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
from pathlib import Path

import httpx
import pytest

from support.server import API_KEY, raw_http, serve_in_thread, shared_server, status_and_error

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def served(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv):
    return shared_server(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv)


def post(served, path, body=None, content=None, headers=None, url=None):
    h = {**served.headers(), **(headers or {})}
    if content is not None:
        h.setdefault("content-type", "application/json")
    return httpx.post(f"{url or served.url}{path}", json=body, content=content, headers=h, timeout=60)


def assert_error(r, status, code=None):
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str), err
    if code:
        assert err["code"] == code, err
    return err


def healthy(served, url=None):
    r = httpx.get(f"{url or served.url}/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text


CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


# ---- 1. 500s where a 4xx belongs ----------------------------------------------------------------
def test_a_version_number_too_large_for_the_store_is_404(served):
    for model in ("x@99999999999999999999", "chat-a@99999999999999999999", "chat-a@9223372036854775808"):
        for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", {"prompt": "hi", "max_tokens": 2}),
                           ("/v1/classify", {"input": "hi"})):
            err = assert_error(post(served, path, {"model": model, **body}), 404, "model_not_found")
            assert "version" in err["message"], err
        assert_error(post(served, "/v1/adapters/load", {"adapter": model}), 404)
        assert_error(post(served, "/v1/adapters/unload", {"adapter": model}), 404)
    member = "ensemble:chat-a@99999999999999999999+chat-b"
    assert_error(post(served, "/v1/completions", {"model": member, "prompt": "hi", "max_tokens": 2}), 404)
    healthy(served)


SURROGATE = "\\ud800"  # JSON's spelling of a lone UTF-16 surrogate


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", '{"model": "chat-a", "prompt": "hi %s there", "max_tokens": 2}'),
    ("/v1/completions", '{"model": "chat-a", "prompt": ["fine", "%s"], "max_tokens": 2}'),
    ("/v1/completions", '{"model": "chat-a", "prompt": "hi", "stop": ["%s"], "max_tokens": 2}'),
    ("/v1/chat/completions", '{"model": "chat-a", "messages": [{"role": "user", "content": "a%sb"}]}'),
    ("/v1/chat/completions",
     '{"model": "chat-a", "messages": [{"role": "user", "content": [{"type": "text", "text": "%s"}]}]}'),
    ("/v1/chat/completions", '{"model": "chat-a%s", "messages": [{"role": "user", "content": "hi"}]}'),
    ("/v1/classify", '{"model": "sentiment", "input": "%s"}'),
    ("/v1/classify", '{"model": "sentiment", "input": ["good", "bad %s"]}'),
    ("/v1/classify", '{"model": "sentiment", "input": "good", "user": "%s"}'),
    ("/v1/adapters/load", '{"adapter": "chat-a%s"}'),
])
def test_a_lone_surrogate_anywhere_in_a_body_is_422(served, path, body):
    r = post(served, path, content=(body % SURROGATE).encode())
    err = assert_error(r, 422, "invalid_unicode")
    assert "surrogate" in err["message"] and err["param"], err
    healthy(served)


def test_ensemble_weights_must_be_finite_positive_and_sum_finite(served):
    for weights in ("*1e308+sentiment*1e308", "*0+sentiment", "*inf+sentiment", "*nan+sentiment",
                    "*-1+sentiment", "*5e-324+sentiment*1e308"):
        model = f"ensemble:sentiment{weights}"
        err = assert_error(post(served, "/v1/classify", {"model": model, "input": "a gripping drama"}), 422)
        assert "weight" in err["message"], err
        gen = f"ensemble:chat-a{weights.replace('sentiment', 'chat-b')}"
        assert_error(post(served, "/v1/completions", {"model": gen, "prompt": "hi", "max_tokens": 2,
                                                      "temperature": 0}), 422)
    # Large but summable weights are fine: only their ratio counts.
    ok = post(served, "/v1/classify", {"model": "ensemble:sentiment*1e307+sentiment*1e307", "input": "a drama"})
    assert ok.status_code == 200, ok.text
    probabilities = ok.json()["data"][0]["probabilities"]
    assert abs(sum(probabilities.values()) - 1) < 1e-5, probabilities
    healthy(served)


# ---- 2. work is bounded before it is done ---------------------------------------------------------
@pytest.mark.timeout(10, func_only=True)  # under 1 s here; tokenizing the 400,000 rows took 19 s
def test_rows_are_counted_before_any_row_is_tokenized(served):
    """50,000 rows per request are refused at once, so /health stays answered among them."""
    rows = ["a dull, lifeless and predictable mess of a movie"] * 50_000

    async def run():
        async with httpx.AsyncClient(base_url=served.url, headers=served.headers(), timeout=120) as client:
            big = [client.post("/v1/classify", json={"model": "sentiment", "input": rows}) if i % 2 else
                   client.post("/v1/completions", json={"model": "chat-a", "prompt": rows, "max_tokens": 1})
                   for i in range(8)]
            health = [client.get("/health") for _ in range(8)]
            return await asyncio.gather(*big, *health)

    answers = asyncio.run(run())
    for r in answers[:8]:
        assert_error(r, 422, "too_many_inputs")
    assert all(r.status_code == 200 for r in answers[8:]), [r.text for r in answers[8:]]
    healthy(served)


@pytest.fixture
def small_body(served):
    """A second app on the same engine whose bodies may be 64 KiB at most."""
    from adapters.server import Limits, create_app

    app = create_app(served.engine, api_key=API_KEY, store_root=served.root, served_name="tiny-llama",
                     limits=Limits(max_body_bytes=64 * 1024, max_prompt_chars=2000, max_tokens=8))
    port, stop = serve_in_thread(app)
    yield port
    stop()


def _head(port: int, path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


def test_a_body_over_the_limit_is_413_from_its_content_length_before_it_is_sent(served, small_body):
    """200 MB announced and nothing sent: the answer comes at once (old servers wait for the body)."""
    for port, path in ((served.port, "/v1/classify"), (small_body, "/v1/completions"), (small_body, "/health")):
        sock, answer = raw_http(port, _head(port, path, "Content-Length: 200000000\r\n"))
        sock.close()
        status, err = status_and_error(answer)
        assert status == 413 and err["code"] == "body_too_large" and "bytes" in err["message"], answer[:500]
    healthy(served)


def test_a_streamed_body_is_cut_off_at_the_limit_and_others_are_answered_meanwhile(served, small_body):
    """A chunked body (no Content-Length) is counted as it arrives: past 64 KiB the server answers
    413 without waiting for the rest, and while that client stalls /health is answered."""
    url = f"http://127.0.0.1:{small_body}"
    chunk = b"[" + b'"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",' * 2000  # ~66 KB of a never-ending JSON list
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    stalled = socket.create_connection(("127.0.0.1", small_body), timeout=20)
    stalled.sendall(_head(small_body, "/v1/classify", "Transfer-Encoding: chunked\r\n") + frame[:100])
    healthy(served, url)  # a client in the middle of its body holds up nobody
    stalled.close()
    sock, answer = raw_http(small_body, _head(small_body, "/v1/classify", "Transfer-Encoding: chunked\r\n"), frame)
    sock.close()
    status, err = status_and_error(answer)
    assert status == 413 and err["code"] == "body_too_large", answer[:500]
    healthy(served, url)
    # Under the limit the body is read and judged on its content.
    r = post(served, "/v1/classify", {"model": "sentiment", "input": "x" * 30_000}, url=url)
    assert_error(r, 422, "prompt_too_long")


def test_long_message_lists_are_refused_before_the_template_renders(served):
    many = [{"role": "user", "content": "hi"}] * 2000  # 2000 x (4 + 2) chars > the 2000-char limit
    assert_error(post(served, "/v1/chat/completions", {"model": "chat-a", "messages": many}), 422,
                 "prompt_too_long")
    assert_error(post(served, "/v1/completions", {"model": "chat-a", "prompt": ["x" * 2001], "max_tokens": 2}),
                 422, "prompt_too_long")


# ---- 3. bounded memory for bad names -----------------------------------------------------------------
def test_failed_loads_are_remembered_in_bounded_memory(served, tmp_path):
    """Refs that fail to load (another base's adapter, under 300 distinct content-id spellings
    and names) leave at most a fixed number of entries behind."""
    from adapters_store import Store

    with Store(served.root) as s:
        digest = s.resolve("bert-sentiment").digest.removeprefix("sha256:")
    refs = [f"sha256:{digest[:n]}" for n in range(8, 65)] + [f"no-such-{i}" for i in range(150)] + \
           [f"bad name {i}" for i in range(100)]
    for ref in refs:
        r = post(served, "/v1/adapters/load", {"adapter": ref})
        assert r.status_code in (404, 409), r.text
    failed = [i for i in served.engine.adapters() if i.state == "FAILED"]
    assert len(failed) <= 64, len(failed)  # 157 of these refs fail after their name is looked up
    assert len(served.server._lineage) <= 1024
    healthy(served)


def test_unloading_what_is_not_loaded_is_404_with_a_message(served):
    assert_error(post(served, "/v1/adapters/load", {"adapter": "bert-sentiment"}), 409, "base_mismatch")
    for ref in ("never-loaded", "bert-sentiment", "chat-a@99", "ensemble:chat-a+chat-b"):
        err = assert_error(post(served, "/v1/adapters/unload", {"adapter": ref}), 404, "adapter_not_loaded")
        assert "not loaded" in err["message"], err
    assert "bert-sentiment" not in {i.ref for i in served.engine.adapters()}  # the failure is forgotten too


# ---- 4. exposure: paths and the Host header ---------------------------------------------------------
def test_no_filesystem_path_reaches_a_client(served, tmp_path, tiny_llama, chat_jsonl, sentiment_csv):
    """Every body of a set of requests (listings with lineage, 404s, 409s, 422s, a corrupt
    store's integrity error) is scanned for the store root, the base folder, the data files and
    home-like path fragments."""
    from adapters.runtime import Engine
    from adapters.server import Limits, create_app, store_resolver
    from adapters_store import Store

    # A copy of the store with one version's weights corrupted, served by an engine of its own.
    corrupt = tmp_path / "corrupt-store"
    shutil.copytree(served.root, corrupt)
    with Store(corrupt) as s:
        version = s.resolve("chat-b")
    victim = next(p for p in Path(version.path).rglob("*.safetensors"))
    victim = victim.resolve()
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    engine = Engine(str(tiny_llama), quant="none", device="cpu", resolver=store_resolver(corrupt))
    app = create_app(engine, api_key=API_KEY, store_root=corrupt, served_name="tiny-llama", limits=Limits())
    port, stop = serve_in_thread(app)
    bodies = []
    try:
        for url in (served.url, f"http://127.0.0.1:{port}"):
            for ref in ("chat-a", "sentiment"):
                assert post(served, "/v1/adapters/load", {"adapter": ref}, url=url).status_code == 200
            h = served.headers()
            for r in (httpx.get(f"{url}/v1/models", headers=h), httpx.get(f"{url}/health"),
                      httpx.get(f"{url}/metrics"), httpx.get(f"{url}/openapi.json")):
                assert r.status_code == 200, r.text
                bodies.append(r.text)
            for path, body in (("/v1/adapters/load", {"adapter": "chat-b"}),
                               ("/v1/adapters/load", {"adapter": "no-such"}),
                               ("/v1/adapters/load", {"adapter": "chat-a@7"}),
                               ("/v1/adapters/load", {"adapter": "chat-a@nosuchalias"}),
                               ("/v1/adapters/load", {"adapter": "sha256:00000000"}),
                               ("/v1/adapters/load", {"adapter": "bert-sentiment"}),
                               ("/v1/adapters/load", {"adapter": "bad name"}),
                               ("/v1/completions", {"model": "chat-b", "prompt": "hi", "max_tokens": 2}),
                               ("/v1/completions", {"model": "nope", "prompt": "hi", "max_tokens": 2}),
                               ("/v1/classify", {"model": "chat-a", "input": "hi"}),
                               ("/v1/classify", {"model": "ensemble:sentiment+chat-a", "input": "hi"}),
                               ("/v1/adapters/unload", {"adapter": "chat-b"})):
                r = post(served, path, body, url=url)
                bodies.append(r.text)
                if url != served.url and "chat-b" in (body.get("adapter"), body.get("model")) and \
                        not path.endswith("/unload"):
                    integrity = r.json()  # a corrupt store is the server's fault: 500, with what to do
                    assert r.status_code == 500 and integrity["error"]["code"] == "integrity_error", r.text
                    assert "adapters verify" in integrity["error"]["message"], r.text
                else:
                    assert r.status_code < 500, r.text
        assert integrity["error"]["code"] == "integrity_error", integrity
        assert "chat-b" in integrity["error"]["message"], integrity
    finally:
        stop()
    secrets = {str(served.root), str(corrupt), str(tiny_llama), str(chat_jsonl), str(sentiment_csv),
               str(Path.home()), str(tmp_path.parent.parent), str(version.path)}
    fragments = ("/home/", "/root/", "/tmp/", "/Users/", "/var/", "/private/")
    for text in bodies:
        for secret in secrets:
            assert secret not in text, f"{secret} leaked in {text[:800]}"
        for fragment in fragments:
            assert fragment not in text, f"{fragment!r} leaked in {text[:800]}"
    models = json.loads(bodies[0])["data"]
    assert models[0]["root"] == "tiny-llama"
    card = next(m for m in models if m["id"] == "chat-a")
    assert card["lineage"]["base"]["fingerprint"] == served.engine.fingerprint  # lineage still there


def test_only_loopback_host_names_are_answered_on_a_loopback_bind(served):
    port = served.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost", f"LOCALHOST:{port}"):
        r = httpx.get(f"{served.url}/health", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", f"localhost.evil:{port}",
                 "10.0.0.1", "[2001:db8::1]:80"):
        for r in (httpx.get(f"{served.url}/health", headers={"Host": host}),
                  httpx.get(f"{served.url}/v1/models", headers={"Host": host, **served.headers()}),
                  httpx.post(f"{served.url}/v1/completions", headers={"Host": host, **served.headers()},
                             json={"model": "chat-a", "prompt": "hi", "max_tokens": 1})):
            err = assert_error(r, 400, "invalid_host")
            assert "--allowed-hosts" in err["message"], err


def test_allowed_hosts_replace_the_default(served):
    from adapters.server import Limits, create_app

    for allowed, good, bad in ((["my-box.lan", "*.example.org"], ["my-box.lan:80", "a.example.org", "example.org"],
                                ["localhost", "127.0.0.1", "evil.example"]),
                               (["*"], ["anything.example", "localhost"], [])):
        app = create_app(served.engine, store_root=served.root, served_name="tiny-llama", limits=Limits(),
                         allowed_hosts=allowed)
        port, stop = serve_in_thread(app)
        try:
            for host in good:
                assert httpx.get(f"http://127.0.0.1:{port}/health", headers={"Host": host}).status_code == 200, host
            for host in bad:
                assert_error(httpx.get(f"http://127.0.0.1:{port}/health", headers={"Host": host}), 400,
                             "invalid_host")
        finally:
            stop()


def test_the_serve_command_takes_allowed_hosts_and_max_body_bytes():
    from adapters.cli.serve import load_serve_config

    cfg = load_serve_config(None, {"base": "x", "allowed_hosts": ["my-box.lan"], "max_body_bytes": 1024})
    assert cfg.allowed_hosts == ["my-box.lan"] and cfg.limits.max_body_bytes == 1024
    assert load_serve_config(None, {"base": "x"}).allowed_hosts is None  # the loopback default


# ---- 5. the OpenAPI spec says what is accepted -------------------------------------------------------
def test_the_spec_pins_what_the_server_always_refuses(served):
    spec = httpx.get(f"{served.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def props(name):
        return schemas[name]["properties"]

    def variants(prop):
        return prop.get("anyOf", [prop])

    classify_input = variants(props("ClassifyRequest")["input"])
    assert any(v.get("type") == "array" and v.get("minItems") == 1 for v in classify_input), classify_input
    prompt = variants(props("CompletionRequest")["prompt"])
    assert all(v.get("minLength") == 1 or v.get("minItems") == 1 for v in prompt), prompt
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        for penalty in ("presence_penalty", "frequency_penalty"):
            numbers = [v for v in variants(props(name)[penalty]) if v.get("type") == "number"]
            assert numbers and all(v.get("minimum") == 0 and v.get("maximum") == 0 for v in numbers)
    pattern = re.compile(props("AdapterRequest")["adapter"]["pattern"])
    for ok in ("chat-a", "chat-a@1", "chat-a@prod", "sha256:0123abcd", "ensemble:a*0.7+b@2*0.3", "9lives"):
        assert pattern.search(ok), ok
    for bad in ("a/b", "./chat-a", "../x", "~/a", "/etc/passwd", "C:\\x", "C:x", "a\\b", ".hidden"):
        assert not pattern.search(bad), bad
    # And the server refuses exactly those, each with the code that names the reason.
    cases = [("/v1/classify", {"model": "sentiment", "input": []}, "empty_input"),
             ("/v1/completions", {"model": "chat-a", "prompt": []}, "empty_prompt"),
             ("/v1/completions", {"model": "chat-a", "prompt": ""}, "empty_prompt"),
             ("/v1/completions", {"model": "chat-a", "prompt": "hi", "logprobs": 21}, "invalid_request"),
             ("/v1/completions", {"model": "chat-a", "prompt": "hi", "max_tokens": 0}, "invalid_request"),
             ("/v1/completions", {"model": "chat-a", "prompt": [10**9]}, "invalid_token"),
             ("/v1/completions", {"model": "chat-a", "prompt": "hi", "echo": True, "logprobs": 1, "stream": True},
              "unsupported"),
             ("/v1/chat/completions", {"model": "chat-a", **CHAT, "presence_penalty": 0.5}, "unsupported"),
             ("/v1/adapters/load", {"adapter": "a/b"}, "path_not_allowed"),
             ("/v1/adapters/unload", {"adapter": "~/x"}, "path_not_allowed")]
    for path, body, code in cases:
        assert_error(post(served, path, body), 422, code)
    for body in ({"model": "chat-a", "prompt": "hi", "max_tokens": 1, "echo": False, "logprobs": None,
                  "presence_penalty": 0, "frequency_penalty": 0.0},
                 {"model": "chat-a", "prompt": ["hi", "ho"], "max_tokens": 1, "logprobs": 0}):
        assert post(served, "/v1/completions", body).status_code == 200


def test_host_check_follows_the_bound_address():
    """Bound to a loopback address only loopback names pass; bound to another address any Host
    does (that server is reachable by other names and should have an API key)."""
    from adapters.server.hosts import HostCheck

    def scope(bound, host):
        return {"server": (bound, 8000), "headers": [(b"host", host.encode())]}

    check = HostCheck()
    for bound in ("127.0.0.1", "127.0.0.2", "::1"):
        assert check.allowed(scope(bound, "localhost:8000")) and check.allowed(scope(bound, "[::1]:8000"))
        assert not check.allowed(scope(bound, "evil.example:8000"))
    for bound in ("0.0.0.0", "10.1.2.3", "::"):
        assert check.allowed(scope(bound, "evil.example:8000")) and check.allowed(scope(bound, "my-box.lan"))


def test_completions_without_max_tokens_fit_a_lower_server_limit(served, small_body):
    """OpenAI's default of 16 tokens, capped at a server limit of 8, instead of a 422."""
    r = post(served, "/v1/completions", {"model": "chat-a", "prompt": "hi", "temperature": 0},
             url=f"http://127.0.0.1:{small_body}")
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 8


# What a client asks for that would change the answer is honoured or refused, never ignored.
CHANGES_THE_ANSWER = [
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
    ({"response_format": {"type": "bogus"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], "tool_choice": "required"},
     "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),  # auto
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
]


@pytest.mark.parametrize("extra, field", CHANGES_THE_ANSWER, ids=[json.dumps(e)[:40] for e, _ in CHANGES_THE_ANSWER])
def test_options_that_would_change_the_answer_are_refused_naming_the_field(served, extra, field):
    import openai

    client = served.openai()
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(model="chat-a", **CHAT, **extra)
    body = err.value.response.json()["error"]
    assert body["param"] == field and body["code"] == "unsupported" and field in body["message"], body


def test_their_no_op_forms_are_accepted(served):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    for extra in ({"response_format": {"type": "text"}}, {"logit_bias": {}}, {"tools": tools, "tool_choice": "none"},
                  {"some_future_field": {"x": 1}}):
        r = post(served, "/v1/chat/completions", {"model": "chat-a", **CHAT, **extra})
        assert r.status_code == 200, (extra, r.text)


def test_an_adapter_is_addressed_as_name_or_as_base_colon_name(served):
    """vLLM and LoRAX send model="<adapter>", SGLang and Ray Serve "<base>:<adapter>": the same
    adapter, the same greedy answer. Another base before the colon is not taken for this one."""
    def answer(model):
        r = post(served, "/v1/completions", {"model": model, "prompt": "hello", "max_tokens": 6, "temperature": 0})
        return r.status_code, (r.json()["choices"][0]["text"] if r.status_code == 200 else r.json()["error"])

    plain, prefixed = answer("chat-a"), answer(f"{served.base_name}:chat-a")
    assert plain[0] == prefixed[0] == 200 and plain[1] == prefixed[1]
    assert answer(f"{served.base_name}:chat-b")[1] == answer("chat-b")[1] != plain[1]
    status, error = answer("some-other-base:chat-a")
    assert status == 404 and error["code"] == "model_not_found", (status, error)


def test_the_base_tokenizer_is_served_as_vllm_serves_it(served, tiny_llama):
    """lm-evaluation-harness's remote tokenizer: GET /tokenizer_info (needs eos_token), POST
    /tokenize {prompt, add_special_tokens} -> tokens, POST /detokenize {tokens} -> prompt. The ids
    are the base tokenizer's own; the API key guards them like /v1."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    text = "Hello there, adapters! ünïcode too"
    info = httpx.get(f"{served.url}/tokenizer_info", headers=served.headers()).json()
    assert info["eos_token"] == tok.eos_token and info["vocab_size"] == len(tok)
    for special in (False, True):
        r = post(served, "/tokenize", {"prompt": text, "add_special_tokens": special})
        assert r.status_code == 200, r.text
        assert r.json()["tokens"] == tok(text, add_special_tokens=special)["input_ids"]
        assert r.json()["count"] == len(r.json()["tokens"])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert post(served, "/detokenize", {"tokens": ids}).json()["prompt"] == tok.decode(ids)
    assert_error(post(served, "/detokenize", {"tokens": [len(tok) + 5]}), 422, "invalid_token")
    assert_error(post(served, "/detokenize", {"tokens": [-1]}), 422)
    assert httpx.post(f"{served.url}/tokenize", json={"prompt": "x"}).status_code == 401
    assert httpx.get(f"{served.url}/tokenizer_info").status_code == 401
