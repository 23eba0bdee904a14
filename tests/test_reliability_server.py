"""Reliability of `adapters serve` as a real process over real HTTP: a table of hand-made hostile
requests, each of which must get its own 4xx (never a 5xx) while the server stays healthy, and a
bounded load run (32 clients, a fixed number of requests) with SIGTERM sent in the middle: every
request in flight is answered, the rest are cleanly refused (no connection, or no response on a
closed connection), no 5xx, and the process exits 0. Figures (statuses, requests, errors,
p50/p99 latency, the server's RSS before and after) are printed; nothing asserts on time.

Run with `make test-reliability` (or `pytest -m reliability tests/test_reliability_server.py -s`).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from support.server import raw_http, shared_server, status_and_error

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[1]
LAUNCH = ("import sys, typer\nfrom adapters.cli.serve import register\napp = typer.Typer()\n"
          "app.callback()(lambda: None)\nregister(app)\napp(sys.argv[1:])\n")
KEY = "sk-reliability"
MAX_BODY = 1024 * 1024


class Process:
    """`adapters serve` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, tiny_llama: Path, store: Path, tmp: Path):
        env = {**os.environ, "ADAPTERS_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
        args = [sys.executable, "-c", LAUNCH, "serve", "--base", str(tiny_llama), "--quant", "none", "--device",
                "cpu", "--store", str(store), "--served-name", "tiny-llama", "--port", "0", "--max-tokens", "8",
                "--max-body-bytes", str(MAX_BODY), "--max-queue", "1024", "--adapter", "chat-a"]
        self.log = open(tmp / "server.log", "w+")
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        self.url = None
        while self.url is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{self.text()}")
            m = re.search(r"running on (http://127\.0\.0\.1:(\d+))", self.text())
            if m:
                self.url, self.port = m.group(1), int(m.group(2))
            time.sleep(0.1)
        self.ps = psutil.Process(self.proc.pid)

    def text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()


@pytest.fixture
def served(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv):
    """The shared test store (chat-a, chat-b, chat-p, sentiment; bert-sentiment on another base)."""
    return shared_server(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv)


@pytest.fixture
def server(served, tiny_llama, tmp_path):
    proc = Process(tiny_llama, served.root, tmp_path)
    yield proc
    proc.close()


AUTH = {"Authorization": f"Bearer {KEY}"}
S = "\\ud800"  # a lone UTF-16 surrogate, as JSON spells it
CHAT = [{"role": "user", "content": "hi"}]
# (what, method, path, json body or raw bytes, extra headers, status, error code)
HOSTILE = [
    ("version past int64 (chat)", "POST", "/v1/chat/completions",
     {"model": "x@99999999999999999999", "messages": CHAT}, {}, 404, "model_not_found"),
    ("version past int64 (classify)", "POST", "/v1/classify",
     {"model": "sentiment@99999999999999999999", "input": "x"}, {}, 404, "model_not_found"),
    ("version past int64 (load)", "POST", "/v1/adapters/load", {"adapter": "x@99999999999999999999"}, {}, 404, None),
    ("surrogate in a prompt", "POST", "/v1/completions",
     f'{{"model": "chat-a", "prompt": "a{S}"}}'.encode(), {}, 422, "invalid_unicode"),
    ("surrogate in a chat message", "POST", "/v1/chat/completions",
     f'{{"model": "chat-a", "messages": [{{"role": "user", "content": "{S}"}}]}}'.encode(), {}, 422,
     "invalid_unicode"),
    ("surrogate in a classify input", "POST", "/v1/classify",
     f'{{"model": "sentiment", "input": ["ok", "{S}"]}}'.encode(), {}, 422, "invalid_unicode"),
    ("surrogate in the model", "POST", "/v1/classify", f'{{"model": "sent{S}", "input": "x"}}'.encode(), {}, 422,
     "invalid_unicode"),
    ("ensemble weights 1e308 (classify)", "POST", "/v1/classify",
     {"model": "ensemble:sentiment*1e308+sentiment*1e308", "input": "x"}, {}, 422, "invalid_request"),
    ("ensemble weights 1e308 (generate)", "POST", "/v1/completions",
     {"model": "ensemble:chat-a*1e308+chat-b*1e308", "prompt": "hi", "temperature": 0}, {}, 422, "invalid_request"),
    ("ensemble weight 0", "POST", "/v1/classify", {"model": "ensemble:sentiment*0+sentiment", "input": "x"}, {},
     422, "invalid_request"),
    ("ensemble weight nan", "POST", "/v1/classify", {"model": "ensemble:sentiment*nan+sentiment", "input": "x"},
     {}, 422, "invalid_request"),
    ("50,000 classify inputs", "POST", "/v1/classify", {"model": "sentiment", "input": ["a fine film"] * 50_000},
     {}, 422, "too_many_inputs"),
    ("50,000 prompts", "POST", "/v1/completions", {"model": "chat-a", "prompt": ["hi"] * 50_000}, {}, 422,
     "too_many_inputs"),
    ("body over the limit", "POST", "/v1/classify", {"model": "sentiment", "input": "x" * (MAX_BODY + 10)}, {},
     413, "body_too_large"),
    ("Host of another site", "GET", "/v1/models", None, {"Host": "evil.example"}, 400, "invalid_host"),
    ("Host ending like loopback", "POST", "/v1/completions", {"model": "chat-a", "prompt": "hi"},
     {"Host": "127.0.0.1.evil.example"}, 400, "invalid_host"),
    ("no API key", "GET", "/v1/models", None, {"Authorization": ""}, 401, "invalid_api_key"),
    ("wrong API key", "POST", "/v1/completions", {"model": "chat-a", "prompt": "hi"},
     {"Authorization": "Bearer sk-wrong"}, 401, "invalid_api_key"),
    ("unload never loaded", "POST", "/v1/adapters/unload", {"adapter": "never-loaded"}, {}, 404,
     "adapter_not_loaded"),
    ("another base's adapter", "POST", "/v1/adapters/load", {"adapter": "bert-sentiment"}, {}, 409, "base_mismatch"),
    ("unload after a failed load", "POST", "/v1/adapters/unload", {"adapter": "bert-sentiment"}, {}, 404,
     "adapter_not_loaded"),
    ("unknown adapter", "POST", "/v1/completions", {"model": "no-such", "prompt": "hi"}, {}, 404, "model_not_found"),
    ("invalid ref", "POST", "/v1/completions", {"model": "bad name!", "prompt": "hi"}, {}, 404, "model_not_found"),
    ("bad content id", "POST", "/v1/classify", {"model": "sha256:zz", "input": "x"}, {}, 404, "model_not_found"),
    ("ref with spaces", "POST", "/v1/completions", {"model": " chat-a", "prompt": "hi"}, {}, 404, "model_not_found"),
    ("empty input list", "POST", "/v1/classify", {"model": "sentiment", "input": []}, {}, 422, "empty_input"),
    ("empty prompt", "POST", "/v1/completions", {"model": "chat-a", "prompt": ""}, {}, 422, "empty_prompt"),
    ("echo true", "POST", "/v1/completions", {"model": "chat-a", "prompt": "hi", "echo": True}, {}, 422,
     "unsupported"),
    ("logprobs {}", "POST", "/v1/completions", {"model": "chat-a", "prompt": "hi", "logprobs": {}}, {}, 422,
     "unsupported"),
    ("presence_penalty", "POST", "/v1/chat/completions", {"model": "chat-a", "messages": CHAT,
                                                          "presence_penalty": 1}, {}, 422, "unsupported"),
    ("adapter with a slash", "POST", "/v1/adapters/load", {"adapter": "a/b"}, {}, 422, "path_not_allowed"),
    ("adapter ../", "POST", "/v1/adapters/load", {"adapter": "../x"}, {}, 422, "path_not_allowed"),
    ("model an absolute path", "POST", "/v1/completions", {"model": "/etc/passwd", "prompt": "hi"}, {}, 422,
     "path_not_allowed"),
    ("malformed JSON", "POST", "/v1/chat/completions", b'{"model": "chat-a", "messages": [', {}, 422,
     "invalid_json"),
    ("not UTF-8", "POST", "/v1/completions", b"\xff\xfe\xfd", {}, 422, None),
    ("JSON nested 100,000 deep", "POST", "/v1/completions", b"[" * 100_000 + b"]" * 100_000, {}, 422, None),
    ("a list, not an object", "POST", "/v1/classify", [1, 2], {}, 422, "invalid_request"),
    ("model of the wrong type", "POST", "/v1/classify", {"model": 123, "input": "x"}, {}, 422, "invalid_request"),
    ("max_tokens 1e400", "POST", "/v1/completions", b'{"model": "chat-a", "prompt": "hi", "max_tokens": 1e400}', {},
     422, "invalid_request"),
    ("seed past int64", "POST", "/v1/completions", {"model": "chat-a", "prompt": "hi", "seed": 2**64}, {}, 422,
     "invalid_request"),
    ("max_tokens over the limit", "POST", "/v1/completions", {"model": "chat-a", "prompt": "hi", "max_tokens": 9},
     {}, 422, "max_tokens_exceeded"),
    ("prompt over the limit", "POST", "/v1/completions",
     {"model": "chat-a", "prompt": "pizza " * 6000, "max_tokens": 2}, {}, 422, "prompt_too_long"),
    ("five stop strings", "POST", "/v1/completions", {"model": "chat-a", "prompt": "hi", "stop": list("abcde")}, {},
     422, "invalid_request"),
    ("stream of two prompts", "POST", "/v1/completions",
     {"model": "chat-a", "prompt": ["a", "b"], "stream": True, "max_tokens": 2}, {}, 422, "unsupported"),
    ("no messages", "POST", "/v1/chat/completions", {"model": "chat-a", "messages": []}, {}, 422, "invalid_request"),
    ("unknown role", "POST", "/v1/chat/completions", {"model": "chat-a", "messages": [{"role": "wizard"}]}, {}, 422,
     "invalid_request"),
    ("classifier asked to chat", "POST", "/v1/chat/completions", {"model": "sentiment", "messages": CHAT}, {}, 422,
     "wrong_task"),
    ("wrong method", "GET", "/v1/completions", None, {}, 405, None),
    ("no such route", "GET", "/v1/nothing", None, {}, 404, None),
]


def _raw(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    sock, answer = raw_http(port, head, body, timeout=30)
    sock.close()
    return status_and_error(answer)


def test_hostile_requests_each_get_their_4xx(served, server, tmp_path, tiny_llama):
    assert len(HOSTILE) >= 30
    rss_before = server.rss_mb()
    rows, problems = [], []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for what, method, path, body, headers, status, code in HOSTILE:
            h = {**AUTH, **headers}
            if h.get("Authorization") == "":
                del h["Authorization"]
            kw = {"content": body, "headers": {**h, "content-type": "application/json"}} if isinstance(body, bytes) \
                else {"json": body, "headers": h} if body is not None else {"headers": h}
            r = client.request(method, path, **kw)
            got = r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}
            rows.append((what, r.status_code, got.get("code")))
            if r.status_code != status or (code and got.get("code") != code) or not got.get("message"):
                problems.append(f"{what}: wanted {status} {code}, got {r.status_code} {r.text[:300]}")
            for secret in (str(served.root), str(tiny_llama), str(Path.home()), "/tmp/"):
                if secret in r.text:
                    problems.append(f"{what}: the response shows the path {secret}")
        # Bodies announced or streamed past the limit, answered before the rest is sent.
        head = (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {KEY}\r\n"
                "Content-Type: application/json\r\n").encode()
        for what, extra, body in (("200 MB announced, none sent", b"Content-Length: 200000000\r\n\r\n", b""),
                                  ("chunked past the limit", b"Transfer-Encoding: chunked\r\n\r\n",
                                   b"".join(b"%x\r\n%s\r\n" % (65536, b"x" * 65536) for _ in range(20)))):
            status, err = _raw(server.port, head + extra, body)
            rows.append((what, status, err.get("code")))
            if status != 413 or err.get("code") != "body_too_large":
                problems.append(f"{what}: wanted 413 body_too_large, got {status} {err}")
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        ok = client.post("/v1/completions", json={"model": "chat-a", "prompt": "hi", "max_tokens": 2}, headers=AUTH)
        assert ok.status_code == 200, ok.text
    rss_after = server.rss_mb()
    print(f"\nhostile requests: {len(rows)}, 5xx: {sum(s >= 500 for _, s, _ in rows)}")
    for what, status, code in rows:
        print(f"  {status} {code or '-':<20} {what}")
    print(f"server RSS: {rss_before:.0f} MB before, {rss_after:.0f} MB after")
    assert not [r for r in rows if r[1] >= 500], rows
    assert not problems, "\n".join(problems)
    assert "Traceback" not in server.text(), server.text()[-3000:]


CLIENTS, PER_CLIENT, SIGTERM_AFTER = 32, 30, 640
PROMPTS = ["what is your favourite food?", "hello, how are you today?", "where did john fly?"]


@pytest.mark.timeout(240, func_only=True)
def test_load_with_sigterm_in_the_middle(served, server):
    """32 clients, 30 requests each at most (completions over two adapters and the base, chats,
    streams, classifications); SIGTERM once 640 are answered. Requests in flight are answered;
    afterwards a client is refused (no connection, or its keep-alive connection closed before a
    response) and stops. No 5xx; the process exits 0."""
    warm = httpx.post(f"{server.url}/v1/classify", json={"model": "sentiment", "input": "warm up"}, headers=AUTH,
                      timeout=60)
    assert warm.status_code == 200, warm.text
    rss_before = server.rss_mb()
    answered, latencies, statuses, refused, broken = [0], [], {}, [], []
    termed = asyncio.Event

    async def one(client: httpx.AsyncClient, k: int) -> int:
        prompt = PROMPTS[k % 3]
        kind = k % 6
        if kind == 5:
            r = await client.post("/v1/classify", json={"model": "sentiment", "input": [prompt, "a dull mess"]})
            return r.status_code
        body = {"model": ["chat-a", "chat-b", "tiny-llama"][k % 3], "max_tokens": 4, "temperature": 0}
        if kind == 4:  # a stream, read to its end
            async with client.stream("POST", "/v1/chat/completions",
                                     json={**body, "messages": [{"role": "user", "content": prompt}],
                                           "stream": True}) as r:
                try:
                    lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
                except httpx.TransportError as exc:  # after the status line: an answer cut off
                    raise AssertionError(f"a stream was cut off: {type(exc).__name__}: {exc}") from None
                if r.status_code == 200 and (not lines or lines[-1] != "data: [DONE]"):
                    raise AssertionError(f"a stream ended without [DONE]: {lines[-3:]}")
                return r.status_code
        if kind % 2:
            r = await client.post("/v1/chat/completions",
                                  json={**body, "messages": [{"role": "user", "content": prompt}]})
        else:
            r = await client.post("/v1/completions", json={**body, "prompt": prompt})
        return r.status_code

    async def run():
        stop = termed()
        # A pooled connection is dropped after 1 s idle, before uvicorn's 5 s keep-alive timeout can
        # close it under a request being sent (a client-side race no server can answer).
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS, keepalive_expiry=1.0)
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=120, limits=limits) as client:
            async def worker(i: int):
                for j in range(PER_CLIENT):
                    started = time.monotonic()
                    try:
                        status = await one(client, i * PER_CLIENT + j)
                    except httpx.TransportError as exc:
                        # No response at all: no connection, or a keep-alive connection the server
                        # closed (a reset when our request was still unread) before answering.
                        if not stop.is_set():
                            broken.append(f"before SIGTERM: {type(exc).__name__}: {exc}")
                        refused.append(type(exc).__name__)
                        return
                    except Exception as exc:  # noqa: BLE001 - a response cut off or a read error
                        broken.append(f"{type(exc).__name__}: {exc}")
                        return
                    latencies.append(time.monotonic() - started)
                    statuses[status] = statuses.get(status, 0) + 1
                    answered[0] += 1
                    if answered[0] == SIGTERM_AFTER:
                        rss_loaded.append(server.rss_mb())
                        server.proc.send_signal(signal.SIGTERM)
                        stop.set()

            await asyncio.gather(*(worker(i) for i in range(CLIENTS)))

    rss_loaded: list[float] = []
    asyncio.run(run())
    try:
        code = server.proc.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the server did not exit within 60 s of SIGTERM:\n{server.text()[-3000:]}") from None
    latencies.sort()

    def pct(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    total = sum(statuses.values()) + len(refused) + len(broken)
    print(f"\nload: {CLIENTS} clients, {total} requests: answered {sum(statuses.values())} {statuses}, "
          f"refused after SIGTERM {len(refused)} {sorted(set(refused))}, errors {len(broken)}")
    print(f"latency p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms; server RSS {rss_before:.0f} MB before the load"
          f", {rss_loaded[0]:.0f} MB at SIGTERM; exit code {code}")
    assert not broken, broken[:10]
    assert not [s for s in statuses if s >= 500], statuses
    assert set(statuses) == {200}, statuses
    assert answered[0] >= SIGTERM_AFTER
    assert code == 0, f"exit code {code}:\n{server.text()[-3000:]}"
    assert "Traceback" not in server.text(), server.text()[-3000:]
