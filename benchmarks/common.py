"""Shared benchmark helpers: environment, median timing, per-subprocess peak RSS, JSON, tables.

Every measured workload runs in a fresh Python subprocess (``in_subprocess``) so that its peak RSS
is its own (``os.wait4`` returns the rusage of exactly that child) and no state leaks between
runs. Threads are pinned (``BENCH_THREADS``, default 1: this 2-core VM is shared, and one thread
per run gives far steadier timings than two threads fighting other work) and the hub is offline.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def bench_env(threads: int = THREADS) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "WANDB_DISABLED": "true", "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    })
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def apply_env(threads: int = THREADS) -> None:
    """The same settings in this process (before torch is imported, where possible)."""
    for key, value in bench_env(threads).items():
        if key != "PYTHONPATH":
            os.environ[key] = value


class SubprocessError(RuntimeError):
    pass


def in_subprocess(target: str, kwargs: dict | None = None, *, threads: int = THREADS,
                  timeout: float = 1800) -> dict:
    """Run ``module:function(**kwargs)`` in a fresh interpreter.

    Returns {"result": <its JSON-able return value>, "peak_rss_bytes": <that child's ru_maxrss>,
    "wall_s": <wall time of the whole child, imports included>}."""
    with tempfile.TemporaryDirectory(prefix="bench-call-") as tmp:
        tmp = Path(tmp)
        (tmp / "args.json").write_text(json.dumps(kwargs or {}))
        cmd = [sys.executable, "-c", "from benchmarks.common import _child; _child()",
               target, str(tmp / "args.json"), str(tmp / "out.json")]
        log = open(tmp / "log.txt", "wb")
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=bench_env(threads), stdout=log, stderr=subprocess.STDOUT)
        deadline = start + timeout
        while True:  # wait4 (not Popen.wait): the rusage of exactly this child
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        if proc.returncode != 0 or not (tmp / "out.json").is_file():
            tail = (tmp / "log.txt").read_text(errors="replace")[-4000:]
            raise SubprocessError(f"{target} failed (exit {proc.returncode}):\n{tail}")
        result = json.loads((tmp / "out.json").read_text())
    # Linux reports ru_maxrss in KiB
    return {"result": result, "peak_rss_bytes": usage.ru_maxrss * 1024, "wall_s": wall}


def _child() -> None:
    import importlib

    target, args_path, out_path = sys.argv[1:4]
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", THREADS)))
    except ImportError:
        pass
    module, func = target.split(":")
    result = getattr(importlib.import_module(module), func)(**json.loads(Path(args_path).read_text()))
    Path(out_path).write_text(json.dumps(result, default=str))


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_time(fn: Callable[[], Any], runs: int = 5, warmup: int = 1) -> float:
    """Median wall time (s) of ``fn()`` over ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# The CPU features that pick torch's and bitsandbytes' kernels.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")


def cpu_flags() -> dict[str, bool]:
    flags: set[str] = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {f: f in flags for f in CPU_FLAGS}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = None
    info = {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1) if mem else None,
            "python": platform.python_version(), "platform": platform.platform(), "threads": THREADS,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "cpu_features": [f for f, on in cpu_flags().items() if on]}
    try:
        from importlib.metadata import version

        info["libraries"] = {n: version(n) for n in ("torch", "transformers", "peft", "bitsandbytes", "accelerate",
                                                     "datasets")}
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def write_json(name: str, data: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine(), **data}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def print_table(title: str, columns: list[str], rows: list[list[Any]], caption: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption, caption_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    Console(width=max(Console().width, 120)).print(table)


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f} MiB"


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def goal(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]missed[/red]"


def trained_steps(trainer, run_dir: Path) -> dict:
    """What a finished ``Trainer`` run did, step by step, from its event log: the logged step
    times and, per step, the real (non-pad) tokens and the padded tokens of the seeded batch it
    drew. Needs ``max_steps`` below one epoch, so the steps are the first batches of epoch 0."""
    from adapters.training.runs import read_events

    steps = [e for e in read_events(Path(run_dir) / "events.jsonl") if e["event"] == "step"]
    lengths = trainer.tokenized["train"]["length"]
    batches = trainer._batches(0)
    n = len(steps)
    assert n == trainer.cfg.training.max_steps <= len(batches), (n, len(batches))
    return {"steps": steps, "times": [e["time"] for e in steps], "lengths": lengths,
            "tokens": [sum(lengths[i] for i in batch) for batch in batches[:n]],
            "padded": [len(batch) * max(lengths[i] for i in batch) for batch in batches[:n]]}
