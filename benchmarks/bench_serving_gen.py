"""Generation part of the serving benchmark (see bench_serving.py): the engine's mixed LoRA batches
against peft's own mixed batch and against peft switch-per-request, LoRA + prefix rows in one call,
and ``adapters serve`` over HTTP against the same dynamic batching in process.

Baselines, all on the same 4-bit base with the engine's own device plan (same quantization, same
compute dtype), run in the same loop as the engine's calls:

1. peft's mixed batch: one ``PeftModel`` holding the adapters,
   ``model.generate(**batch, adapter_names=[...])`` over the very rows the engine gets (left padded,
   greedy, ``min_new_tokens`` = ``max_new_tokens``): what a competent peft user runs to serve many
   adapters at once. The headline baseline.
2. peft switch-per-request (second, labelled baseline): the same model, ``set_adapter`` then
   ``generate`` one request at a time.

Also measured at 8 distinct adapters, for information: the engine's rows all on ``__base__`` (no LoRA
at all: the most any LoRA path could give), and peft's mixed batch with the engine's LM-head fix
(``engine._contiguous_input``) hooked onto its head, which separates the LoRA path from a torch
layout trap that every batched prefill on the CPU hits (see that function).

Rows: ``ROWS`` prompts; with D distinct adapters row i takes adapter i mod D, for D in the sizes.
Flatness: the engine over those rows with D adapters against the same rows all on one adapter.
Tokens per second count generated tokens over the wall time of the whole call (prompt prefill
included). Variants alternate (the order reversed every repeat: ABC CBA ...), so drifts in machine
load hit all alike; each figure is the median over repeats, with min-max; ratios are medians of
per-repeat ratios of adjacent runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
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
ROWS = 16  # rows per call in the mixed-batch comparisons (enough for 16 distinct adapters)
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


def spread(values: list[float]) -> dict:
    return {"median": C.median(values), "min": min(values), "max": max(values), "n": len(values)}


def paired(runs: dict[str, list[dict]], a: str, b: str) -> dict:
    """Median tokens/s of each variant (wall time), and the median over repeats of a/b within a
    repeat (adjacent runs, so a slow drift in machine load cancels), with min-max; the same in CPU
    time when both sides ran in this process."""
    out: dict = {k: C.median([r["wall"] for r in v]) for k, v in runs.items()}
    ratios = [x["wall"] / y["wall"] for x, y in zip(runs[a], runs[b])]
    out["ratio"], out["ratio_min"], out["ratio_max"] = C.median(ratios), min(ratios), max(ratios)
    if all("cpu" in r for r in runs[a] + runs[b]):
        out["cpu_ratio"] = C.median([x["cpu"] / y["cpu"] for x, y in zip(runs[a], runs[b])])
    return out


def summary(runs: dict[str, list[dict]], baselines: list[tuple[str, str]]) -> dict:
    """Each variant's tokens/s (median, min, max) and each (a, b) pair's per-repeat ratio."""
    out = {"rates": {k: spread([r["wall"] for r in v]) for k, v in runs.items()},
           "cpu_rates": {k: spread([r["cpu"] for r in v]) for k, v in runs.items() if all("cpu" in r for r in v)},
           "runs": runs}
    for a, b in baselines:
        if a in runs and b in runs:
            out[f"{a}/{b}"] = paired(runs, a, b)
    return out


def measure(adapters: dict, quant: str, s: dict, server: Server) -> dict:
    from adapters.runtime import Engine, store_resolver

    lora = [ref for ref, _ in adapters["lora"]]
    prefix = [ref for ref, _ in adapters["prefix"]]
    engine = Engine(GEN_BASE, quant=quant, resolver=store_resolver(server.root), preload=lora + prefix)
    log(f"engine loaded with {len(lora)} LoRA and {len(prefix)} prefix adapters resident "
        f"({engine.plan.device}, {str(engine.plan.compute_dtype).removeprefix('torch.')} compute)")
    tokens, repeats = s["tokens"], s["repeats"]
    out: dict = {"device": engine.plan.device, "compute_dtype": str(engine.plan.compute_dtype), "rows": ROWS}
    sizes = s["sizes"]
    peft = PeftSide(adapters["lora"][:max(sizes)], quant, engine.plan, tokens)
    log(f"plain peft model on the same base with {len(peft.names)} LoRA adapters")
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(ROWS)]
    with fixed_length(engine):
        engine.generate(prompts, adapters=[lora[i % len(lora)] for i in range(ROWS)], max_new_tokens=2,
                        raw=True)  # warm-up

        def gen(refs):
            def call():
                results = engine.generate(prompts, adapters=refs, max_new_tokens=tokens, raw=True)
                return sum(r.tokens for r in results)
            return lambda: rate(call)

        out["mixed"] = {}
        for d in sizes:
            refs = [lora[i % d] for i in range(ROWS)]
            names = [peft.names[i % d] for i in range(ROWS)]
            agree = peft.agreement(engine, prompts, refs, names)
            variants = {"engine": gen(refs),
                        "peft_mixed": lambda names=names: rate(lambda: peft.mixed(prompts, names))}
            if d > 1:
                variants["engine_one"] = gen([lora[0]] * ROWS)
            if d == 8:
                variants["peft_switch"] = lambda names=names: rate(lambda: peft.switch(prompts, names,
                                                                                        s["peft_requests"]))
                variants["engine_base"] = gen([None] * ROWS)
                variants["peft_mixed_lmfix"] = lambda names=names: rate(lambda: peft.mixed(prompts, names, True))
            runs = _alternating(variants, s["repeats_at_8"] if d == 8 else s["repeats_vs_peft"])
            m = out["mixed"][str(d)] = summary(runs, [("engine", "peft_mixed"), ("engine", "engine_one"),
                                                      ("engine", "peft_switch"), ("engine_base", "peft_mixed"),
                                                      ("peft_mixed_lmfix", "peft_mixed"),
                                                      ("engine", "peft_mixed_lmfix"), ("engine", "engine_base")])
            m["identical_rows"], m["distinct"] = agree, d
            r = m["rates"]
            log(f"{d} distinct LoRA over {ROWS} rows: engine {r['engine']['median']:.1f} tok/s, peft mixed "
                f"{r['peft_mixed']['median']:.1f} ({m['engine/peft_mixed']['ratio']:.2f}x); "
                f"{agree}/{ROWS} rows token for token equal")
        out["set_adapter_ms"] = C.median(peft.set_times) * 1000 if peft.set_times else None
        peft.close()
        peft = None  # frees the model; the variants above still hold this name's cell
        gc.collect()

        mixed_rows = [x for pair in zip(lora[:4], prefix) for x in pair]  # L P L P ...
        lp_prompts = PROMPTS[:8]

        def grouped():
            a = engine.generate(lp_prompts[0::2], adapters=mixed_rows[0::2], max_new_tokens=tokens, raw=True)
            b = engine.generate(lp_prompts[1::2], adapters=mixed_rows[1::2], max_new_tokens=tokens, raw=True)
            return sum(r.tokens for r in a + b)

        def lp_mixed():
            results = engine.generate(lp_prompts, adapters=mixed_rows, max_new_tokens=tokens, raw=True)
            return sum(r.tokens for r in results)

        runs = _alternating({"mixed": lambda: rate(lp_mixed), "grouped": lambda: rate(grouped)}, repeats)
        m = out["lora_prefix"] = paired(runs, "mixed", "grouped")
        log(f"LoRA+prefix one call {m['mixed']:.1f} tok/s, by type {m['grouped']:.1f} tok/s")

    server.wait_ready()
    server.load_adapters(lora + prefix)  # the same resident set as this engine's
    log("adapters serve is up with the same adapters resident")
    out["http"] = _http(engine, server, lora[:HTTP_ADAPTERS], tokens, repeats, s["http_per_client"])
    return out


# --------------------------------------------------------------------------- plain peft baselines


class PeftSide:
    """A plain PeftModel on the same base, quantization and device plan as the engine, holding the
    given LoRA adapters (names a0, a1, ...): peft's mixed batch and peft switch-per-request."""

    def __init__(self, adapters: list[tuple[str, Path]], quant: str, plan, tokens: int):
        from peft import PeftModel

        from adapters.base.loading import load_base_model, load_tokenizer
        from adapters.base.quiet import quiet_loading
        from adapters.base.resolve import resolve_base

        base = resolve_base(GEN_BASE)
        self.tok = load_tokenizer(base, "causal-lm")
        self.tok.padding_side = "left"
        model, _ = load_base_model(base, "causal-lm", quant, plan, pad_token_id=self.tok.pad_token_id)
        self.names = [f"a{i}" for i in range(len(adapters))]
        with quiet_loading():
            model = PeftModel.from_pretrained(model, str(adapters[0][1]), adapter_name=self.names[0])
            for name, (_, path) in zip(self.names[1:], adapters[1:]):
                model.load_adapter(str(path), adapter_name=name)
        self.model = model.eval()
        self.device = model.get_input_embeddings().weight.device
        self.tokens = tokens
        self.set_times: list[float] = []
        self.mixed(PROMPTS[:2], self.names[:2])  # warm-up
        self.switch(PROMPTS[:1], self.names[:1], 1)

    def _generate(self, batch, **kw):
        import torch

        with torch.no_grad():
            out = self.model.generate(**batch, max_new_tokens=self.tokens, min_new_tokens=self.tokens,
                                      do_sample=False, pad_token_id=self.tok.pad_token_id, **kw)
        return out[:, batch["input_ids"].shape[1]:].tolist()

    def mixed_ids(self, prompts: list[str], names: list[str], lm_fix: bool = False) -> list[list[int]]:
        from adapters.runtime.engine import _contiguous_input

        batch = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        hook = self.model.get_output_embeddings().register_forward_pre_hook(_contiguous_input) if lm_fix else None
        try:
            return self._generate(batch, adapter_names=names)
        finally:
            if hook is not None:
                hook.remove()

    def mixed(self, prompts: list[str], names: list[str], lm_fix: bool = False) -> int:
        """peft's own mixed batch: every row through its adapter in one ``generate``."""
        return sum(len(r) for r in self.mixed_ids(prompts, names, lm_fix))

    def switch(self, prompts: list[str], names: list[str], requests: int) -> int:
        """``set_adapter`` then ``generate`` alone, one request at a time (the first ``requests`` rows)."""
        produced = 0
        for prompt, name in list(zip(prompts, names))[:requests]:
            t = time.perf_counter()
            self.model.set_adapter(name)
            self.set_times.append(time.perf_counter() - t)
            batch = self.tok([prompt], return_tensors="pt", add_special_tokens=False).to(self.device)
            produced += len(self._generate(batch)[0])
        return produced

    def agreement(self, engine, prompts: list[str], refs: list[str], names: list[str]) -> int:
        """Rows whose greedy tokens are the same from the engine and from peft's mixed batch."""
        ours = [r.token_ids for r in engine.generate(prompts, adapters=refs, max_new_tokens=self.tokens, raw=True)]
        theirs = self.mixed_ids(prompts, names)
        return sum(a == b for a, b in zip(ours, theirs))

    def close(self) -> None:
        import torch

        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ HTTP


class Server:
    """``adapters serve`` in its own process on 127.0.0.1 (its adapters loaded through its API)."""

    def __init__(self, root: Path, quant: str, log: Path):
        self.root, self.log_path = root, log
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "adapters", "serve", "--base", GEN_BASE, "--quant", quant,
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


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _batched_clients(make_srv, jobs: list[list[tuple[str, str]]], tokens: int,
                           stats: list | None = None) -> tuple[float, int, int]:
    """The same clients against the server's own request path minus HTTP: a fresh
    ``handlers.Server`` (what ``adapters serve`` runs behind its routes) whose batcher (same max batch
    size, max wait, round-robin fill) runs ``Server._run`` on this process's engine."""
    from adapters.runtime import GenerationRequest

    srv = make_srv()
    await srv.start()
    try:
        async def one_client(mine):
            produced = stopped = 0
            for prompt, ref in mine:
                results = await srv.batcher.submit("generate", ref, [GenerationRequest(prompt, ref, tokens, raw=True)])
                produced += sum(r.tokens for r in results)
                stopped += sum(r.finish_reason == "stop" for r in results)
            return produced, stopped

        start = time.perf_counter()
        done = await asyncio.gather(*(one_client(mine) for mine in jobs))
        wall = time.perf_counter() - start
    finally:
        await srv.stop()
    if stats is not None:
        stats.append(srv.batcher.stats.rows / max(1, srv.batcher.stats.batches))
    return wall, sum(d[0] for d in done), sum(d[1] for d in done)


def _http(engine, server: Server, refs: list[str], tokens: int, repeats: int, per_client: int) -> dict:
    """32 clients, each sending its requests one after the other (client c: adapter c mod 8), to
    ``adapters serve`` over HTTP, and the same clients against the same request path in this
    process (``handlers.Server`` and its batcher on this process's engine, no HTTP).

    Both sides: an Engine built the same way (same base, quant, device plan, the same resident
    adapters), torch threads from the same environment (BENCH_THREADS), warmed by the same
    requests at 2 tokens, the same batcher settings (``Limits()``), so batches form alike. The peft
    models this process held are freed before this part. EOS stays on (the same greedy requests).
    Reported besides tokens/s: each side's CPU seconds per run (the server process's from /proc;
    this process's ``process_time``, which also pays for its client coroutines), and its mean batch."""
    from adapters.server.handlers import Server as Handlers
    from adapters.server.limits import Limits
    from adapters.server.prometheus import Metrics

    jobs = [[(PROMPTS[(c + j) % len(PROMPTS)], refs[c % len(refs)]) for j in range(per_client)]
            for c in range(HTTP_CLIENTS)]
    def srv():
        return Handlers(engine, Limits(), server.root, None, Metrics())

    warm = [[job[0]] for job in jobs]
    asyncio.run(_clients(server.url, warm, 2))  # warm-up: connections, every adapter, the batch shapes
    asyncio.run(_batched_clients(srv, warm, 2))
    info = {"http": {"batches": [], "stopped_early": [], "server_cpu_s": []},
            "inproc": {"batches": [], "stopped_early": [], "cpu_s": []}}

    def over_http() -> dict:
        calls, rows = server.batches()
        cpu = _proc_cpu_s(server.proc.pid)
        wall, produced, stopped = asyncio.run(_clients(server.url, jobs, tokens))
        cpu = _proc_cpu_s(server.proc.pid) - cpu
        calls2, rows2 = server.batches()
        info["http"]["batches"].append((rows2 - rows) / max(1.0, calls2 - calls))
        info["http"]["stopped_early"].append(stopped)
        info["http"]["server_cpu_s"].append(cpu)
        info["http"]["tokens"] = produced
        return {"wall": produced / wall, "cpu": produced / max(cpu, 1e-9)}

    def in_process() -> dict:
        cpu = time.process_time()
        wall, produced, stopped = asyncio.run(_batched_clients(srv, jobs, tokens, info["inproc"]["batches"]))
        cpu = time.process_time() - cpu
        info["inproc"]["stopped_early"].append(stopped)
        info["inproc"]["cpu_s"].append(cpu)
        info["inproc"]["tokens"] = produced
        return {"wall": produced / wall, "cpu": produced / max(cpu, 1e-9)}

    runs = _alternating({"http": over_http, "inproc": in_process}, repeats)
    m = paired(runs, "http", "inproc")
    m["http_spread"] = spread([r["wall"] for r in runs["http"]])
    m["inproc_spread"] = spread([r["wall"] for r in runs["inproc"]])
    log(f"HTTP {m['http']:.1f} tok/s (server CPU {C.median(info['http']['server_cpu_s']):.1f} s/run), in-process "
        f"{m['inproc']:.1f} tok/s (CPU {C.median(info['inproc']['cpu_s']):.1f} s/run): {m['ratio']:.2f}x")
    return {**m, "runs": runs, "requests": sum(len(j) for j in jobs), "clients": HTTP_CLIENTS,
            "mean_batch": C.median(info["http"]["batches"]), "mean_batch_inproc": C.median(info["inproc"]["batches"]),
            "server_cpu_s": C.median(info["http"]["server_cpu_s"]), "inproc_cpu_s": C.median(info["inproc"]["cpu_s"]),
            "detail": info}
