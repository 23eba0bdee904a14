"""Quality benchmark: Rotten Tomatoes test split with MiniLM-L6.

- fp32 LoRA vs 4-bit LoRA (configs/rt-minilm-lora.yaml, ``quant=none`` for fp32): goal within
  2 accuracy points;
- 4-bit prefix tuning vs 4-bit LoRA (configs/rt-minilm-prefix.yaml with the overrides below):
  goal within 6 accuracy points.

Every run uses the same data sizes (2000 train rows, 500 dev, 500 test) and seeds; the adapter
kept is the best on dev (macro-F1), scored once on test. Accuracy and macro-F1 for all. Each run is
its own subprocess (one thread), one after the other.

    python -m benchmarks quality [--quick]
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from benchmarks import common as C

LORA = C.ROOT / "configs" / "rt-minilm-lora.yaml"
PREFIX = C.ROOT / "configs" / "rt-minilm-prefix.yaml"
# Overrides applied to the prefix config on top of SHARED (none: the shipped config as it is).
PREFIX_OVERRIDES: list[str] = []
SHARED = ["training.seed=42", "data.split.seed=42", "data.max_train_samples=2000", "data.max_eval_samples=500"]
QUICK = ["data.max_train_samples=400", "data.max_eval_samples=200"]
GOALS = {"lora_fp32 vs lora_4bit": ("lora_fp32", "lora_4bit", 2.0),
         "prefix_4bit vs lora_4bit": ("prefix_4bit", "lora_4bit", 6.0)}


def _train(config: str, overrides: list[str]) -> dict:
    """Child: one training run through the public API; the metrics and how long it took."""
    import shutil
    import tempfile
    import time
    from pathlib import Path

    import adapters

    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    start = time.perf_counter()
    try:
        result = adapters.train(config, overrides=overrides, run_dir=work / "run", progress=False)
    finally:
        elapsed = time.perf_counter() - start
    keep = ("accuracy", "f1_macro", "loss")
    out = {"dev": {k: result.metrics["dev"].get(k) for k in keep},
           "test": {k: result.metrics["test"].get(k) for k in keep},
           "best_step": result.metrics.get("best_step"), "steps": result.metrics.get("steps"),
           "sizes": result.lineage["data"]["sizes"], "train_s": elapsed}
    shutil.rmtree(work, ignore_errors=True)
    return out


def runs(quick: bool) -> dict[str, tuple[str, list[str]]]:
    shared = SHARED + (QUICK if quick else [])
    return {"lora_fp32": (str(LORA), shared + ["quant=none"]),
            "lora_4bit": (str(LORA), shared + ["quant=4bit"]),
            "prefix_4bit": (str(PREFIX), shared + ["quant=4bit"] + PREFIX_OVERRIDES)}


def run(quick: bool = False) -> dict:
    plan = runs(quick)

    def one(name: str) -> dict:
        config, overrides = plan[name]
        r = C.in_subprocess("benchmarks.bench_quality:_train", {"config": config, "overrides": overrides})
        print(f"  quality {name}: test accuracy {r['result']['test']['accuracy']:.4f}, "
              f"macro-F1 {r['result']['test']['f1_macro']:.4f} ({r['wall_s']:.0f} s)", flush=True)
        return {**r["result"], "config": config, "overrides": overrides, "peak_rss_bytes": r["peak_rss_bytes"]}

    # One at a time by default: on this shared 2-core VM two one-thread runs side by side each ran
    # ~3x slower than one alone (measured), so parallel saves nothing. BENCH_QUALITY_PARALLEL=2 to try.
    with ThreadPoolExecutor(max_workers=int(os.environ.get("BENCH_QUALITY_PARALLEL", "1"))) as pool:
        futures = {name: pool.submit(one, name) for name in plan}
        results = {name: f.result() for name, f in futures.items()}
    goals = {}
    for label, (a, b, points) in GOALS.items():
        gap = 100 * (results[b]["test"]["accuracy"] - results[a]["test"]["accuracy"])
        goals[f"{label}: accuracy gap <= {points:g} points"] = {"value": round(gap, 2), "met": gap <= points}
    out = {"quick": quick, "runs": results, "prefix_overrides": PREFIX_OVERRIDES, "goals": goals}
    _print(out)
    path = C.write_json("quality", out)
    print(f"wrote {path}")
    return out


def _print(r: dict) -> None:
    ref = r["runs"]["lora_4bit"]["test"]
    rows = []
    for name, x in r["runs"].items():
        t, d = x["test"], x["dev"]
        rows.append([name, f"{100 * t['accuracy']:.1f}", f"{100 * (t['accuracy'] - ref['accuracy']):+.1f}",
                     f"{100 * t['f1_macro']:.1f}", f"{100 * d['accuracy']:.1f}", f"{100 * d['f1_macro']:.1f}",
                     f"{x['best_step']}/{x['steps']}", f"{x['train_s']:.0f} s"])
    sizes = r["runs"]["lora_4bit"]["sizes"]
    goals = "; ".join(f"goal {k} (gap {v['value']:+.1f}): {'met' if v['met'] else 'MISSED'}" for k, v in r["goals"].items())
    C.print_table(f"Quality: Rotten Tomatoes, MiniLM-L6 (train {sizes['train']}, dev {sizes['dev']}, "
                  f"test {sizes['test']})",
                  ["run", "test acc %", "vs lora_4bit", "test macro-F1 %", "dev acc %", "dev macro-F1 %",
                   "best/steps", "time"], rows,
                  caption=f"{goals}. Prefix overrides: {' '.join(r['prefix_overrides']) or '(config as is)'}")


if __name__ == "__main__":
    run()
