"""lm-evaluation-harness through ``adapters serve`` against lm-eval's own ``hf`` model with ``peft=``.

SmolLM2-135M (the built-in base) in float32 on the CPU, one LoRA adapter (peft's own, seeded random
B matrices so that it changes the answers) stored in a scratch store. Two tasks written as lm-eval
task YAML over a local JSONL file of arithmetic questions: ``multiple_choice`` (loglikelihoods: the
echo + logprobs request) and ``generate_until``. Each side runs the same tasks:

- ``local-completions``: lm-eval's OpenAI-completions client against ``adapters serve`` (a real
  server process, real HTTP, the server's remote tokenizer, one request at a time);
- ``hf``: lm-eval loads the base and the adapter itself with transformers + peft (batch size 1);
- ``hf, no logits cache``: the same with ``logits_cache=False``. By default lm-eval's hf model runs
  one forward pass for all the choices of a question whose continuations are one token each (it
  reads their scores off the context's last logits); a client of an API sends one request per
  choice, so this side does the work the server is asked to do, request for request.

Reported: the sides' scores (they must be equal), the largest per-item loglikelihood difference,
wall time per side (median and range of runs in rotating order) and their ratios. Then, in process, the
per-request cost of echo + logprobs over plain generation of one token (the engine alone, 16
requests a call, alternated, median of 5).

    python -m benchmarks lmeval [--quick]
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common as C

BASE = "smollm2-135m"
FULL = {"docs": 40, "repeats": 5}
QUICK = {"docs": 10, "repeats": 2}
NO_CACHE = "hf, no logits cache"


def _questions(n: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        wrong = sorted({a + b + 1, a + b - 1, a * b} - {a + b})[:2]
        choices = [str(a + b), *map(str, wrong)]
        rng.shuffle(choices)
        rows.append({"question": f"Question: what is {a} plus {b}? Answer:", "choices": [" " + c for c in choices],
                     "label": choices.index(str(a + b)), "answer": str(a + b)})
    return rows


def _tasks(folder: Path, rows: list[dict]) -> None:
    import yaml

    data = folder / "questions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
              "doc_to_text": "{{question}}"}
    tasks = {"bench_mc": {"output_type": "multiple_choice", "doc_to_choice": "{{choices}}", "doc_to_target": "label",
                          "metric_list": [{"metric": "acc"}]},
             "bench_gen": {"output_type": "generate_until", "doc_to_target": " {{answer}}",
                           "generation_kwargs": {"until": ["\n", "."], "max_gen_toks": 4, "do_sample": False},
                           "metric_list": [{"metric": "exact_match"}]}}
    for name, spec in tasks.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"task": name, **common, **spec}, sort_keys=False))


def _adapter(out: Path, base_path: str) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16,
                                            target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    peft.save_pretrained(out)
    return out


def _evaluate(model: str, args: str, tasks: Path) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=model, model_args=args, tasks=["bench_mc", "bench_gen"],
                                  task_manager=TaskManager(include_path=str(tasks)), log_samples=True, batch_size=1)
    seconds = time.perf_counter() - start
    scores = {t: {k: v for k, v in r.items() if isinstance(v, (int, float))} for t, r in out["results"].items()}
    logliks = [float(r[0][0]) for s in out["samples"]["bench_mc"] for r in s["resps"]]
    generations = [s["resps"][0][0] for s in out["samples"]["bench_gen"]]
    return {"seconds": seconds, "scores": scores, "logliks": logliks, "generations": generations}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(store: Path, port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "adapters", "serve", "--base", BASE, "--quant", "none",
                             "--compute-dtype", "float32", "--store", str(store), "--port", str(port),
                             "--adapter", "bench-lora"], env=C.bench_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"adapters serve exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("adapters serve did not become healthy in 300 s")


def _echo_overhead(store: Path, repeats: int) -> dict:
    """Engine only: 16 requests of one generated token, plain against echo + logprobs (top 1)."""
    from adapters.runtime import Engine, store_resolver
    from adapters.runtime.requests import GenerationRequest

    engine = Engine(BASE, quant="none", compute_dtype="float32", resolver=store_resolver(store))
    rows = _questions(16)
    ids = [engine.tokenizer(r["question"] + r["choices"][0], add_special_tokens=False)["input_ids"] for r in rows]

    def call(echo: bool) -> float:
        requests = [GenerationRequest("", "bench-lora", max_new_tokens=1, raw=True, prompt_ids=i, echo=echo,
                                      logprobs=echo, top_logprobs=1 if echo else 0) for i in ids]
        start = time.perf_counter()
        engine.run(requests)
        return time.perf_counter() - start

    call(True), call(False)  # warm
    plain, echo = [], []
    for i in range(repeats):
        for side in ((False, True) if i % 2 == 0 else (True, False)):
            (echo if side else plain).append(call(side))
    per = {"plain_ms": C.median(plain) / len(ids) * 1000, "echo_ms": C.median(echo) / len(ids) * 1000}
    return {**per, "ratio": per["echo_ms"] / per["plain_ms"], "prompt_tokens_mean": sum(map(len, ids)) / len(ids),
            "plain_range_ms": [min(plain) / len(ids) * 1000, max(plain) / len(ids) * 1000],
            "echo_range_ms": [min(echo) / len(ids) * 1000, max(echo) / len(ids) * 1000]}


def run(quick: bool = False) -> dict:
    from adapters.base.resolve import resolve_base
    from adapters_store import Store

    sizes = QUICK if quick else FULL
    work = Path(tempfile.mkdtemp(prefix="bench-lmeval-"))
    os.environ["OPENAI_API_KEY"] = "unused"  # local-completions sends it; this server has no key
    server = None
    try:
        base_path = str(resolve_base(BASE).path)
        adapter = _adapter(work / "lora", base_path)
        store = work / "store"
        with Store(store) as s:
            s.put(adapter, "bench-lora")
        _tasks(work, _questions(sizes["docs"]))
        port = _free_port()
        server = _serve(store, port)
        sides = {"server": ("local-completions", f"base_url=http://127.0.0.1:{port}/v1/completions,"
                                                 "model=bench-lora,tokenizer_backend=remote,num_concurrent=1"),
                 "hf": ("hf", f"pretrained={base_path},peft={adapter},dtype=float32,device=cpu")}
        sides[NO_CACHE] = ("hf", sides["hf"][1] + ",logits_cache=False")
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        order = list(sides)
        for i in range(sizes["repeats"]):
            for side in order[i % 3:] + order[:i % 3]:  # each side first, second and third in turn
                runs[side].append(_evaluate(*sides[side], work))
                print(f"  lmeval {side} run {i + 1}/{sizes['repeats']}: {runs[side][-1]['seconds']:.1f} s", flush=True)
        overhead = _echo_overhead(store, 5 if not quick else 2)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    ours, theirs = runs["server"][0], runs["hf"][0]
    diff = max(abs(a - b) for a, b in zip(ours["logliks"], theirs["logliks"]))
    same_scores = all(r["scores"] == theirs["scores"] for rs in runs.values() for r in rs)
    same_generations = all(rs[0]["generations"] == theirs["generations"] for rs in runs.values())
    wall = {side: [r["seconds"] for r in rs] for side, rs in runs.items()}
    ratio = C.median(wall["hf"]) / C.median(wall["server"])
    ratio_no_cache = C.median(wall[NO_CACHE]) / C.median(wall["server"])
    C.print_table(f"lm-eval through adapters serve vs lm-eval hf+peft ({BASE}, float32, cpu, {sizes['docs']} docs x 2 "
                  "tasks)", ["side", "acc (mc)", "exact_match (gen)", "wall s (median)", "range"],
                  [[side, runs[side][0]["scores"]["bench_mc"]["acc,none"],
                    runs[side][0]["scores"]["bench_gen"]["exact_match,none"], f"{C.median(wall[side]):.1f}",
                    f"{min(wall[side]):.1f}-{max(wall[side]):.1f}"] for side in runs],
                  caption=f"same scores on every run: {same_scores}; largest loglikelihood difference {diff:.2e}; "
                          f"same generations: {same_generations}; hf / server wall time {ratio:.2f}x, "
                          f"hf without its logits cache / server {ratio_no_cache:.2f}x")
    C.print_table("echo + logprobs against plain generation, engine in process (16 requests of 1 token)",
                  ["request", "ms per request (median)", "range"],
                  [["plain", f"{overhead['plain_ms']:.1f}", "{:.1f}-{:.1f}".format(*overhead["plain_range_ms"])],
                   ["echo + logprobs (top 1)", f"{overhead['echo_ms']:.1f}",
                    "{:.1f}-{:.1f}".format(*overhead["echo_range_ms"])]],
                  caption=f"ratio {overhead['ratio']:.2f}x at {overhead['prompt_tokens_mean']:.0f} prompt tokens "
                          "a request")
    result = {"quick": quick, "docs": sizes["docs"], "wall_s": wall, "ratio_hf_over_server": ratio,
              "ratio_hf_no_logits_cache_over_server": ratio_no_cache,
              "scores": {"server": ours["scores"], "hf": theirs["scores"]}, "max_loglik_diff": diff,
              "same_scores": same_scores, "same_generations": same_generations, "echo_overhead": overhead,
              "goals": {"same scores as lm-eval hf+peft": same_scores,
                        "loglikelihoods within 1e-4": {"value": diff, "met": diff < 1e-4},
                        "same generations": same_generations}}
    C.write_json("lmeval", result)
    return result
