"""Generation part of the serving benchmark (see bench_serving.py): mixed LoRA batches, a plain peft
switch-per-request baseline, LoRA + prefix rows in one call, and ``adapters serve`` over HTTP.

Tokens per second count generated tokens over the wall time of the whole call (prompt prefill
included). Variants alternate in order from repeat to repeat, so drifts in machine load hit all
alike; each figure is the median over repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common as C
from benchmarks.bench_serving import GEN_BASE, log

TOPICS = ["the sea", "a quiet library", "morning coffee", "mountain trails", "city buses", "old maps",
          "a rainy day", "chess openings", "bread baking", "the night sky", "garden tools", "jazz records",
          "winter coats", "paper planes", "river boats", "street markets"]
PROMPTS = [f"Write two sentences about {t}." for t in TOPICS]
HTTP_CLIENTS = 32
HTTP_ADAPTERS = 8


@contextlib.contextmanager
def fixed_length(engine):
    """Every row decodes exactly max_new_tokens: equal work on every side of a comparison."""
    saved = engine.eos_ids
    engine.eos_ids = set()
    try:
        yield
    finally:
        engine.eos_ids = saved


def rate(fn) -> dict:
    """Tokens per second of ``fn()`` (which returns the tokens it generated): by wall time, and by
    this process's CPU time (one torch thread: the work itself, little affected by other load)."""
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = fn()
    return {"wall": tokens / (time.perf_counter() - wall), "cpu": tokens / (time.process_time() - cpu)}


def _alternating(variants: dict, repeats: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {k: [] for k in variants}
    for rep in range(repeats):
        names = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in names:
            out[name].append(variants[name]())
    return out


def paired(runs: dict[str, list[dict]], a: str, b: str) -> dict:
    """Median tokens/s of each variant (wall time), and the median over repeats of a/b within a
    repeat (adjacent runs, so a slow drift in machine load cancels); the same in CPU time when
    both sides ran in this process."""
    out: dict = {k: C.median([r["wall"] for r in v]) for k, v in runs.items()}
    out["ratio"] = C.median([x["wall"] / y["wall"] for x, y in zip(runs[a], runs[b])])
    if all("cpu" in r for r in runs[a] + runs[b]):
        out["cpu_ratio"] = C.median([x["cpu"] / y["cpu"] for x, y in zip(runs[a], runs[b])])
    out["runs"] = runs
    return out


def measure(adapters: dict, quant: str, s: dict, server: Server) -> dict:
    from adapters.runtime import Engine

    lora = [ref for ref, _ in adapters["lora"]]
    prefix = [ref for ref, _ in adapters["prefix"]]
    engine = Engine(GEN_BASE, quant=quant, store_root=server.root, preload=lora + prefix)
    log(f"engine loaded with {len(lora)} LoRA and {len(prefix)} prefix adapters resident")
    server.wait_ready()
    server.load_adapters(lora + prefix)  # the same resident set as this engine's
    log("adapters serve is up with the same adapters resident")
    tokens, repeats = s["tokens"], s["repeats"]
    out: dict = {}
    with fixed_length(engine):
        engine.generate(PROMPTS[:len(lora)], adapters=lora, max_new_tokens=2, raw=True)  # warm-up

        def gen(prompts, refs):
            def call():
                results = engine.generate(prompts, adapters=refs, max_new_tokens=tokens, raw=True)
                return sum(r.tokens for r in results)
            return lambda: rate(call)

        out["mixed"] = {}
        for n in s["sizes"]:
            runs = _alternating({"mixed": gen(PROMPTS[:n], lora[:n]), "single": gen(PROMPTS[:n], [lora[0]] * n)},
                                s["repeats_at_8"] if n == 8 else repeats)
            m = out["mixed"][str(n)] = paired(runs, "mixed", "single")
            log(f"{n} distinct LoRA {m['mixed']:.1f} tok/s, one LoRA {m['single']:.1f} tok/s")

        peft_runs, set_ms = _peft_switch(adapters["lora"][:8], quant, tokens, repeats, s["peft_requests"])
        m8, runs8 = out["mixed"]["8"], out["mixed"]["8"]["runs"]["mixed"]
        peft, peft_cpu = C.median([r["wall"] for r in peft_runs]), C.median([r["cpu"] for r in peft_runs])
        out["vs_peft"] = {"engine": m8["mixed"], "peft": peft, "ratio": m8["mixed"] / peft,
                          "cpu_ratio": C.median([r["cpu"] for r in runs8]) / peft_cpu, "runs": peft_runs,
                          "set_adapter_ms": set_ms}
        log(f"peft switch-per-request {out['vs_peft']['peft']:.1f} tok/s")

        mixed_rows = [x for pair in zip(lora[:4], prefix) for x in pair]  # L P L P ...
        prompts = PROMPTS[:8]

        def grouped():
            a = engine.generate(prompts[0::2], adapters=mixed_rows[0::2], max_new_tokens=tokens, raw=True)
            b = engine.generate(prompts[1::2], adapters=mixed_rows[1::2], max_new_tokens=tokens, raw=True)
            return sum(r.tokens for r in a + b)

        runs = _alternating({"mixed": gen(prompts, mixed_rows), "grouped": lambda: rate(grouped)}, repeats)
        m = out["lora_prefix"] = paired(runs, "mixed", "grouped")
        log(f"LoRA+prefix one call {m['mixed']:.1f} tok/s, by type {m['grouped']:.1f} tok/s")

    out["http"] = _http(engine, server, lora[:HTTP_ADAPTERS], tokens, repeats, s["http_per_client"])
    return out


# --------------------------------------------------------------------------- plain peft baseline


def _peft_switch(adapters: list[tuple[str, Path]], quant: str, tokens: int, repeats: int,
                 requests: int) -> tuple[list[dict], float]:
    """A plain PeftModel on the same 4-bit base with every adapter loaded; each request:
    ``set_adapter`` to its adapter, then ``generate`` alone."""
    import torch
    from peft import PeftModel

    from adapters.bases import resolve_base
    from adapters.modeling import load_base_model, load_tokenizer, quiet_loading
    from adapters.quant import plan_device


    base = resolve_base(GEN_BASE)
    tok = load_tokenizer(base, "causal-lm")
    model, _ = load_base_model(base, "causal-lm", quant, plan_device("auto"), pad_token_id=tok.pad_token_id)
    names = [f"a{i}" for i in range(len(adapters))]
    with quiet_loading():
        model = PeftModel.from_pretrained(model, str(adapters[0][1]), adapter_name=names[0])
        for name, (_, path) in zip(names[1:], adapters[1:]):
            model.load_adapter(str(path), adapter_name=name)
    model.eval()
    device = model.get_input_embeddings().weight.device
    inputs = [tok(p, return_tensors="pt", add_special_tokens=False).to(device) for p in PROMPTS]
    set_times: list[float] = []

    @torch.no_grad()
    def one_by_one() -> int:
        produced = 0
        for i in range(requests):
            t = time.perf_counter()
            model.set_adapter(names[i % len(names)])
            set_times.append(time.perf_counter() - t)
            ids = inputs[i % len(inputs)]
            out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            produced += out.shape[1] - ids["input_ids"].shape[1]
        return produced

    with torch.no_grad():  # warm-up
        model.generate(**inputs[0], max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)
    runs = [rate(one_by_one) for _ in range(repeats)]
    return runs, C.median(set_times) * 1000


# ------------------------------------------------------------------------------------------ HTTP


class Server:
    """``adapters serve`` in its own process on 127.0.0.1 (its adapters loaded through its API)."""

    def __init__(self, root: Path, quant: str, log: Path):
        self.root, self.log_path = root, log
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "adapters.cli", "serve", "--base", GEN_BASE, "--quant", quant,
                    "--store", str(root), "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = C.bench_env()
        env["ADAPTERS_HOME"] = str(self.root)
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, cwd=C.ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"adapters serve exited ({self.proc.returncode}):\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"adapters serve not ready after {timeout:.0f} s:\n{self.tail()}")

    def load_adapters(self, refs: list[str]) -> None:
        import httpx

        for ref in refs:
            r = httpx.post(self.url + "/v1/adapters/load", json={"adapter": ref}, timeout=300)
            if r.status_code != 200:
                raise RuntimeError(f"adapters serve could not load {ref}: {r.status_code} {r.text[:300]}")

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def batches(self) -> tuple[float, float]:
        """(engine calls, rows) for generation so far, from /metrics."""
        import httpx

        text = httpx.get(self.url + "/metrics", timeout=30).text
        found = {}
        for key in ("count", "sum"):
            m = re.search(rf'^adapters_batch_size_{key}{{kind="generate"}} (\S+)$', text, re.MULTILINE)
            found[key] = float(m.group(1)) if m else 0.0
        return found["count"], found["sum"]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.proc = None


async def _clients(url: str, jobs: list[list[tuple[str, str]]], tokens: int) -> tuple[float, int, int]:
    import httpx

    limits = httpx.Limits(max_connections=len(jobs) + 4, max_keepalive_connections=len(jobs) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as client:
        async def one_client(mine):
            produced = stopped = 0
            for prompt, ref in mine:
                r = await client.post("/v1/completions", json={"model": ref, "prompt": prompt, "max_tokens": tokens,
                                                                "temperature": 0})
                r.raise_for_status()
                body = r.json()
                produced += body["usage"]["completion_tokens"]
                stopped += sum(c["finish_reason"] == "stop" for c in body["choices"])
            return produced, stopped

        start = time.perf_counter()
        done = await asyncio.gather(*(one_client(mine) for mine in jobs))
        wall = time.perf_counter() - start
    return wall, sum(d[0] for d in done), sum(d[1] for d in done)


def _http(engine, server: Server, refs: list[str], tokens: int, repeats: int, per_client: int) -> dict:
    """32 clients, each sending its requests one after the other (client c: adapter c mod 8),
    against the same requests through the in-process engine in full batches of the server's
    max_batch_size, in the order the clients send them."""
    from adapters.server.limits import Limits

    jobs = [[(PROMPTS[(c + j) % len(PROMPTS)], refs[c % len(refs)]) for j in range(per_client)]
            for c in range(HTTP_CLIENTS)]
    flat = [jobs[c][j] for j in range(per_client) for c in range(HTTP_CLIENTS)]
    size = Limits().max_batch_size
    asyncio.run(_clients(server.url, [[job[0]] for job in jobs], 2))  # warm-up: connections, every adapter
    engine.generate([p for p, _ in flat[:size]], adapters=[r for _, r in flat[:size]], max_new_tokens=2, raw=True)
    info = {"http": {"batches": [], "stopped_early": []}, "inproc": {"stopped_early": []}}

    def over_http() -> dict:
        calls, rows = server.batches()
        wall, produced, stopped = asyncio.run(_clients(server.url, jobs, tokens))
        calls2, rows2 = server.batches()
        info["http"]["batches"].append((rows2 - rows) / max(1.0, calls2 - calls))
        info["http"]["stopped_early"].append(stopped)
        info["http"]["tokens"] = produced
        return {"wall": produced / wall}

    def in_process() -> dict:
        start, produced, stopped = time.perf_counter(), 0, 0
        for i in range(0, len(flat), size):
            chunk = flat[i:i + size]
            results = engine.generate([p for p, _ in chunk], adapters=[r for _, r in chunk], max_new_tokens=tokens,
                                      temperature=0.0, raw=True)
            produced += sum(r.tokens for r in results)
            stopped += sum(r.finish_reason == "stop" for r in results)
        info["inproc"]["stopped_early"].append(stopped)
        info["inproc"]["tokens"] = produced
        return {"wall": produced / (time.perf_counter() - start)}

    runs = _alternating({"http": over_http, "inproc": in_process}, repeats)
    m = paired(runs, "http", "inproc")
    log(f"HTTP {m['http']:.1f} tok/s, in-process {m['inproc']:.1f} tok/s")
    return {**m, "requests": len(flat), "clients": HTTP_CLIENTS,
            "mean_batch": C.median(info["http"]["batches"]), "detail": info}
