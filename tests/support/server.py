"""Shared helpers for the server tests (no tests here): tiny adapters in a store of their own, and a
real uvicorn server on 127.0.0.1 (a free port) in a background thread over the real Engine.

One server is started per test process and shared by the server test modules (the engine and the
adapters take a few seconds to build); it has its own store root, independent of $ADAPTERS_HOME.
"""

from __future__ import annotations

import atexit
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import adapters

from support.config import tiny_config
from support.runtime import perturb

API_KEY = "sk-test-key"
CHAT = {"prompt_column": "question", "response_column": "answer", "max_length": 64}


def train_into_store(root: Path, name: str, base: Path, data: Path, seed: int, /, **over) -> str:
    """Train a tiny adapter (2 steps), perturb it, store it as ``name`` in ``root``; returns the ref."""
    from adapters_store import Store

    training = {"epochs": 1, "batch_size": 8, "max_steps": 2, "learning_rate": 1e-2, "seed": 0, "log_every": 1}
    cfg = tiny_config(base, data, name=name, training=training, **over)
    work = root.parent / f"work-{name}"
    result = adapters.train(cfg, output=work / "adapter", run_dir=work / "run", store=False, store_root=root)
    out = Path(result.output_dir)
    perturb(out, out, seed=seed + 5)  # prefixes scaled by 1.5 and up: far from the base
    with Store(root) as s:
        return s.put(result.output_dir, name, lineage=result.lineage, metrics=result.metrics).ref


def serve_in_thread(app, *, timeout: float = 60.0):
    """Run ``app`` under uvicorn on 127.0.0.1 (a free port, bound here: no race) in a thread."""
    import uvicorn

    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are
    # TCP, and with it on every small response waited ~40 ms for the delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: server errors reach pytest's log capture of the running test.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", log_config=None,
                            timeout_keep_alive=30, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)

    def stop():
        server.should_exit = True
        thread.join(10)
        sock.close()

    return port, stop


@dataclass
class Served:
    engine: object
    app: object
    port: int
    root: Path
    refs: dict[str, str]  # role -> store ref
    base_name: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def server(self):
        return self.app.state.server

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def openai(self, **kw):
        from openai import OpenAI

        kw.setdefault("api_key", API_KEY)
        return OpenAI(base_url=f"{self.url}/v1", max_retries=0, timeout=60, **kw)


_SHARED: dict[str, Served] = {}
_LOCK = threading.Lock()


def shared_server(tmp_path_factory, tiny_llama: Path, tiny_bert: Path, chat_jsonl: Path,
                  sentiment_csv: Path) -> Served:
    """The process-wide test server over tiny Llama: chat adapters A and B (LoRA), P (prefix), a
    sentiment classifier (LoRA) and a classifier trained on tiny BERT (another base)."""
    with _LOCK:
        if "main" in _SHARED:
            return _SHARED["main"]
        from adapters.runtime import Engine
        from adapters.server import Limits, create_app, store_resolver

        root = tmp_path_factory.mktemp("server") / "store"
        chat = {"task": "causal-lm", "data": {"source": str(chat_jsonl), **CHAT}}
        refs = {
            "A": train_into_store(root, "chat-a", tiny_llama, chat_jsonl, 1, **chat),
            "B": train_into_store(root, "chat-b", tiny_llama, chat_jsonl, 2, lora={"r": 4, "alpha": 8}, **chat),
            "P": train_into_store(root, "chat-p", tiny_llama, chat_jsonl, 3, method="prefix",
                                  prefix={"num_virtual_tokens": 4}, **chat),
            "cls": train_into_store(root, "sentiment", tiny_llama, sentiment_csv, 4),
            "bert": train_into_store(root, "bert-sentiment", tiny_bert, sentiment_csv, 5),
        }
        engine = Engine(str(tiny_llama), quant="none", device="cpu", resolver=store_resolver(root))
        limits = Limits(max_prompt_chars=2000, max_prompt_tokens=128, max_tokens=24, default_max_tokens=8,
                        max_batch_size=16, max_wait_ms=20, max_queue=512, max_streams=16)
        app = create_app(engine, api_key=API_KEY, limits=limits, store_root=root, served_name="tiny-llama")
        port, stop = serve_in_thread(app)
        atexit.register(stop)
        served = Served(engine, app, port, root, refs, "tiny-llama")
        _SHARED["main"] = served
        return served


def raw_http(port: int, head: bytes, body: bytes = b"", timeout: float = 20) -> tuple[socket.socket, bytes]:
    """Send ``head`` (+ ``body``) on a fresh connection; return it and what the server answered."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(head + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    header, _, rest = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", header)
    while length and len(rest) < int(length.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return sock, header + b"\r\n\r\n" + rest


def status_and_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]
