"""Quality benchmark: Rotten Tomatoes with MiniLM-L6, several training seeds, the full test split.

Variants (each trained once per seed in ``SEEDS``):

- ``lora_fp32``: configs/rt-minilm-lora.yaml with ``quant=none``;
- ``lora_4bit``: the same config with ``quant=4bit``;
- ``prefix_4bit``: configs/rt-minilm-prefix.yaml with ``quant=4bit`` (its learning rate and epochs
  come from ``--tune-prefix`` below, i.e. from the dev split only).

Goals, on accuracy, each judged on the mean of the per-seed *paired* differences (same seed, same
rows): 4-bit LoRA at most 2 points *below* fp32 LoRA (4-bit better is fine); 4-bit prefix at most
6 points below 4-bit LoRA.

Data: the built-in set comes unsplit; ``data.split.seed`` (fixed at 42 here, for every variant and
seed) cuts the dev and test splits (10 % each) and picks the 2000 training rows, so every run sees
the same train, dev and test rows, and only ``training.seed`` (initialisation, dropout, batch
order) varies. ``data.max_eval_samples`` caps dev *and* test, so it is set to null: the whole dev
split selects the adapter (best dev macro-F1 over epochs) and the whole test split scores it, once.
Mean and sample standard deviation over seeds for accuracy and macro-F1 on test (dev beside them).

    python -m benchmarks quality [--quick]          # the comparison (3 seeds x 3 variants)
    python -m benchmarks.bench_quality --tune-prefix [--lr ...] [--epochs ...]
                                                    # the dev-only search behind the prefix config

Each run is its own subprocess with one thread; ``BENCH_QUALITY_PARALLEL`` (default 1, at most 2
is sensible on a 2-core machine) runs that many side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
from concurrent.futures import ThreadPoolExecutor

from benchmarks import common as C

LORA = C.ROOT / "configs" / "rt-minilm-lora.yaml"
PREFIX = C.ROOT / "configs" / "rt-minilm-prefix.yaml"
SEEDS = (42, 43, 44)
# The data split is fixed for every run; null lifts the 500-row cap on dev and test.
SHARED = ["data.split.seed=42", "data.max_train_samples=2000", "data.max_eval_samples=null"]
QUICK = ["data.max_train_samples=400", "data.max_eval_samples=200"]
QUICK_SEEDS = (42,)
# goal label -> (variant, reference, points): mean(variant - reference) must be >= -points.
GOALS = {"lora_4bit vs lora_fp32": ("lora_4bit", "lora_fp32", 2.0),
         "prefix_4bit vs lora_4bit": ("prefix_4bit", "lora_4bit", 6.0)}
# --tune-prefix: the grid, searched on the mean dev macro-F1 over these training seeds.
TUNE_LR = (1e-2, 3e-2, 5e-2)
TUNE_EPOCHS = (2, 4)
TUNE_SEEDS = SEEDS


def _train(config: str, overrides: list[str], with_test: bool = True) -> dict:
    """Child: one training run through the public API; the metrics and how long it took.

    with_test=False leaves the test metrics out of what comes back (the tuning runs: the
    trainer still scores test at the end, but nothing downstream sees it)."""
    import json
    import shutil
    import tempfile
    import time
    from pathlib import Path

    import adapters

    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    start = time.perf_counter()
    try:
        result = adapters.train(config, overrides=overrides, run_dir=work / "run", progress=False, store=False)
        elapsed = time.perf_counter() - start
        keep = ("accuracy", "f1_macro", "loss")
        history = []
        events = work / "run" / "events.jsonl"
        if events.is_file():
            for line in events.read_text().splitlines():
                e = json.loads(line)
                if e.get("event") == "eval" and e.get("split") == "dev":
                    history.append({"epoch": e.get("epoch"), "step": e.get("step"),
                                    **{k: e["metrics"].get(k) for k in ("accuracy", "f1_macro")}})
        out = {"dev": {k: result.metrics["dev"].get(k) for k in keep}, "dev_history": history,
               "best_step": result.metrics.get("best_step"), "steps": result.metrics.get("steps"),
               "sizes": result.lineage["data"]["sizes"], "train_s": elapsed}
        if with_test:
            out["test"] = {k: result.metrics["test"].get(k) for k in keep}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def runs(quick: bool) -> dict[str, tuple[str, list[str]]]:
    shared = SHARED + (QUICK if quick else [])
    return {"lora_fp32": (str(LORA), shared + ["quant=none"]),
            "lora_4bit": (str(LORA), shared + ["quant=4bit"]),
            "prefix_4bit": (str(PREFIX), shared + ["quant=4bit"])}


def _pool_map(jobs: dict, fn) -> dict:
    with ThreadPoolExecutor(max_workers=max(1, int(os.environ.get("BENCH_QUALITY_PARALLEL", "1")))) as pool:
        futures = {key: pool.submit(fn, key, job) for key, job in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def _pm(stat: dict, scale: float = 100.0, signed: bool = False) -> str:
    fmt = "+.1f" if signed else ".1f"
    sd = "-" if stat["sd"] is None else f"{scale * stat['sd']:.1f}"
    return f"{scale * stat['mean']:{fmt}} ± {sd}"


def run(quick: bool = False, seeds: tuple[int, ...] | None = None) -> dict:
    seeds = tuple(seeds or (QUICK_SEEDS if quick else SEEDS))
    plan = runs(quick)
    jobs = {(name, seed): (config, overrides + [f"training.seed={seed}"])
            for seed in seeds for name, (config, overrides) in plan.items()}

    def one(key, job) -> dict:
        name, seed = key
        config, overrides = job
        r = C.in_subprocess("benchmarks.bench_quality:_train", {"config": config, "overrides": overrides})
        t = r["result"]["test"]
        print(f"  quality {name} seed {seed}: test accuracy {t['accuracy']:.4f}, macro-F1 {t['f1_macro']:.4f} "
              f"({r['wall_s']:.0f} s)", flush=True)
        return {**r["result"], "config": config, "overrides": overrides, "peak_rss_bytes": r["peak_rss_bytes"]}

    done = _pool_map(jobs, one)
    per_run = {name: {str(seed): done[(name, seed)] for seed in seeds} for name in plan}
    summary = {}
    for name, by_seed in per_run.items():
        summary[name] = {f"{split}_{metric}": _mean_sd([x[split][metric] for x in by_seed.values()])
                         for split in ("test", "dev") for metric in ("accuracy", "f1_macro")}
    goals, diffs = {}, {}
    for label, (a, b, points) in GOALS.items():
        d = [per_run[a][str(s)]["test"]["accuracy"] - per_run[b][str(s)]["test"]["accuracy"] for s in seeds]
        stat = _mean_sd(d)
        diffs[label] = stat
        goals[f"{label}: mean paired test-accuracy difference >= -{points:g} points"] = {
            "value": round(100 * stat["mean"], 2), "met": 100 * stat["mean"] >= -points,
            "every_seed_met": all(100 * x >= -points for x in d),
            "per_seed_points": {str(s): round(100 * x, 2) for s, x in zip(seeds, d)},
            "sd_points": None if stat["sd"] is None else round(100 * stat["sd"], 2)}
    sizes = next(iter(per_run["lora_4bit"].values()))["sizes"]
    out = {"quick": quick, "seeds": list(seeds), "shared_overrides": SHARED + (QUICK if quick else []),
           "sizes": sizes, "summary": summary, "paired_differences": diffs, "goals": goals, "runs": per_run}
    _print(out)
    path = C.write_json("quality_quick" if quick else "quality", out)
    print(f"wrote {path}")
    return out


def _print(r: dict) -> None:
    s, sizes = r["summary"], r["sizes"]
    rows = [[name, _pm(x["test_accuracy"]), _pm(x["test_f1_macro"]), _pm(x["dev_accuracy"]), _pm(x["dev_f1_macro"]),
             " ".join(f"{100 * v:.1f}" for v in x["test_accuracy"]["values"])] for name, x in s.items()]
    C.print_table(f"Quality: Rotten Tomatoes, MiniLM-L6, mean ± sd over training seeds {r['seeds']} "
                  f"(train {sizes['train']}, dev {sizes['dev']}, test {sizes['test']} rows: the whole test split)",
                  ["variant", "test acc %", "test macro-F1 %", "dev acc %", "dev macro-F1 %", "test acc per seed"],
                  rows)
    rows = []
    for label, g in r["goals"].items():
        rows.append([label, f"{g['value']:+.2f}" + ("" if g["sd_points"] is None else f" ± {g['sd_points']:.2f}"),
                     " ".join(f"{v:+.1f}" for v in g["per_seed_points"].values()),
                     C.goal(g["met"]), "yes" if g["every_seed_met"] else "no"])
    C.print_table("Quality goals: paired per-seed test-accuracy differences (points)",
                  ["goal", "mean ± sd", "per seed", "on the mean", "every seed"], rows)


def tune_prefix(seeds: tuple[int, ...] = TUNE_SEEDS, learning_rates: tuple[float, ...] = TUNE_LR,
                epochs: tuple[int, ...] = TUNE_EPOCHS) -> dict:
    """Dev-only search of the prefix learning rate and epochs: every grid point trained once per
    seed; objective the mean over seeds of the best-epoch dev macro-F1 (a point that collapses on
    one seed loses, however well it does on another).

    Test metrics are not returned, printed or written: the choice cannot look at test."""
    jobs = {(lr, ep, seed): (str(PREFIX), SHARED + ["quant=4bit", f"training.seed={seed}",
                                                    f"training.learning_rate={lr}", f"training.epochs={ep}"])
            for lr in learning_rates for ep in epochs for seed in seeds}

    def one(key, job) -> dict:
        lr, ep, seed = key
        config, overrides = job
        r = C.in_subprocess("benchmarks.bench_quality:_train",
                            {"config": config, "overrides": overrides, "with_test": False})
        d = r["result"]["dev"]
        print(f"  tune prefix lr {lr:g} epochs {ep} seed {seed}: dev accuracy {d['accuracy']:.4f}, "
              f"macro-F1 {d['f1_macro']:.4f} ({r['wall_s']:.0f} s)", flush=True)
        return {**r["result"], "learning_rate": lr, "epochs": ep, "seed": seed, "overrides": overrides}

    done = _pool_map(jobs, one)
    points = {}
    for (lr, ep, seed), x in done.items():
        points.setdefault((lr, ep), {})[seed] = x
    scores = {k: _mean_sd([100 * x["dev"]["f1_macro"] for x in v.values()]) for k, v in points.items()}
    best = max(scores, key=lambda k: scores[k]["mean"])
    sizes = next(iter(done.values()))["sizes"]
    rows = []
    for (lr, ep), per_seed in points.items():
        mean, sd = scores[(lr, ep)]["mean"], scores[(lr, ep)]["sd"]
        rows.append([f"{lr:g}", ep, f"{mean:.2f}" + ("" if sd is None else f" ± {sd:.2f}"),
                     " ".join(f"{100 * x['dev']['f1_macro']:.1f}" for x in per_seed.values()),
                     " ".join(f"{x['best_step']}/{x['steps']}" for x in per_seed.values()),
                     "<- chosen" if (lr, ep) == best else ""])
    C.print_table(f"Prefix tuning on the dev split only (seeds {' '.join(map(str, seeds))}; train {sizes['train']}, "
                  f"dev {sizes['dev']} rows)",
                  ["lr", "epochs", "dev macro-F1 % (mean ± sd)", "per seed", "best/steps per seed", ""], rows)
    out = {"seeds": list(seeds), "objective": "mean over seeds of dev f1_macro (best epoch)",
           "sizes": {"train": sizes["train"], "dev": sizes["dev"]},
           "grid": {"learning_rate": list(learning_rates), "epochs": list(epochs)},
           "chosen": {"learning_rate": best[0], "epochs": best[1]},
           "scores": [{"learning_rate": lr, "epochs": ep, "dev_f1_macro": score} for (lr, ep), score in scores.items()],
           "runs": [{k: v for k, v in x.items() if k != "sizes"} for x in done.values()]}
    path = C.write_json("quality_tune_prefix", out)
    print(f"wrote {path}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 400 train rows, 200 dev/test rows")
    parser.add_argument("--tune-prefix", action="store_true",
                        help="search the prefix learning rate x epochs on dev macro-F1 (no test metrics)")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"training seeds (default {' '.join(map(str, SEEDS))})")
    parser.add_argument("--lr", type=float, nargs="+", help="--tune-prefix: the learning rates to try "
                        f"(default {' '.join(f'{x:g}' for x in TUNE_LR)})")
    parser.add_argument("--epochs", type=int, nargs="+", help="--tune-prefix: the epoch counts to try "
                        f"(default {' '.join(map(str, TUNE_EPOCHS))})")
    args = parser.parse_args(argv)
    C.apply_env()
    if args.tune_prefix:
        tune_prefix(tuple(args.seeds or TUNE_SEEDS), tuple(args.lr or TUNE_LR), tuple(args.epochs or TUNE_EPOCHS))
    else:
        run(quick=args.quick, seeds=tuple(args.seeds) if args.seeds else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
