"""Sweep benchmark: ``adapters sweep`` on Rotten Tomatoes with 4-bit MiniLM (configs/rt-minilm-lora.yaml).

1. A 16-trial TPE sweep over the learning rate, the LoRA rank and the epochs, on dev macro-F1, run
   from the same sampler seed without pruning and with each pruner in ``PRUNERS`` (the median
   pruner, successive halving; fed by the trainer's per-epoch dev evaluations). Per sweep: wall
   time, trials finished / pruned, the best trial's dev macro-F1 and its test accuracy (scored
   once, after the sweep chose it on dev).
2. The best configuration of the unpruned sweep re-trained with 3 training seeds against the
   shipped config with the same seeds: test accuracy mean ± sd.

Each pruned sweep runs at the same time as an unpruned one, one thread each on this 2-core machine,
so that whatever else the machine does weighs on both alike; the reruns also go two at a time
(only their accuracy counts).

Goals: the sweep's best beats the shipped config on test accuracy by more than the spread (the
larger of the two sds); pruning cuts the sweep's wall time by >= 40% for the same best dev
macro-F1 (within one point).

Data as in bench_quality: ``data.split.seed`` 42 fixes the train (2000 rows), dev and test rows for
every run; the whole dev split selects, the whole test split scores. Each sweep runs in its own
subprocess with its own store.

    python -m benchmarks sweep [--quick]
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from benchmarks import bench_quality as Q
from benchmarks import common as C

SPACE = {"training.learning_rate": {"log_uniform": [1.0e-4, 3.0e-2]}, "lora.r": [4, 8, 16],
         "training.epochs": {"int": [1, 4]}}
TRIALS, QUICK_TRIALS = 16, 4
# The pruners measured, each against an unpruned sweep run beside it: BENCH_SWEEP_PRUNERS=halving
# measures one pair.
PRUNERS = tuple(os.environ.get("BENCH_SWEEP_PRUNERS", "median,halving").split(","))
SWEEP_TIMEOUT = 4 * 3600  # one whole sweep, in seconds


def _sweep(overrides: list[str], trials: int, pruner: str) -> dict:
    """Child: one sweep in a fresh store; what it found and how long it took."""
    import shutil
    import tempfile
    import time
    from pathlib import Path

    from adapters.api import _as_config
    from adapters.experiments import sweep as S
    from adapters_store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        cfg = _as_config(str(Q.LORA), overrides)
        start = time.perf_counter()
        result = S.run_sweep(cfg, S.parse_space(SPACE, cfg), SPACE, trials, pruner=pruner, seed=0, store_root=work)
        wall = time.perf_counter() - start
        with Store(work) as store:
            best = store.resolve(result.best.ref)
            test = best.metrics["test"]
        states = [t.state for t in result.trials]
        return {"wall_s": wall, "finished": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
                "best_params": result.best.params, "best_dev_f1": result.best.value,
                "best_test_accuracy": test["accuracy"], "best_test_f1": test["f1_macro"],
                "trials": [{"number": t.number, "state": t.state, "value": t.value, "params": t.params,
                            "seconds": t.seconds} for t in result.trials]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(quick: bool = False) -> dict:
    shared = Q.SHARED + (Q.QUICK if quick else [])
    trials = QUICK_TRIALS if quick else TRIALS
    seeds = Q.QUICK_SEEDS if quick else Q.SEEDS
    pairs = {}
    with ThreadPoolExecutor(2) as pool:
        for pruner in PRUNERS:  # each pruned sweep beside an unpruned one, started together
            jobs = {arm: pool.submit(C.in_subprocess, "benchmarks.bench_sweep:_sweep",
                                     {"overrides": shared, "trials": trials, "pruner": arm}, timeout=SWEEP_TIMEOUT)
                    for arm in ("none", pruner)}
            pairs[pruner] = {arm: job.result()["result"] for arm, job in jobs.items()}
        best = pairs[PRUNERS[0]]["none"]["best_params"]
        tuned = [f"{key}={value}" for key, value in best.items()]
        jobs = {name: [pool.submit(C.in_subprocess, "benchmarks.bench_quality:_train",
                                   {"config": str(Q.LORA), "overrides": shared + extra + [f"training.seed={seed}"]})
                       for seed in seeds]
                for name, extra in (("shipped", []), ("sweep best", tuned))}
        reruns = {name: [job.result()["result"] for job in runs] for name, runs in jobs.items()}
    stats = {name: Q._mean_sd([r["test"]["accuracy"] for r in rows]) for name, rows in reruns.items()}
    gain = stats["sweep best"]["mean"] - stats["shipped"]["mean"]
    spread = max(s["sd"] or 0.0 for s in stats.values())
    goals = {"sweep best beats shipped by more than the spread": {"value": round(gain, 4), "met": gain > spread}}
    for pruner, pair in pairs.items():
        cut = 1 - pair[pruner]["wall_s"] / pair["none"]["wall_s"]
        same_best = abs(pair[pruner]["best_dev_f1"] - pair["none"]["best_dev_f1"]) <= 0.01
        goals[f"{pruner} pruning cuts wall time >= 40% for the same best"] = {"value": round(cut, 3),
                                                                           "met": cut >= 0.4 and same_best}
    results = {"quick": quick, "space": SPACE, "trials": trials, "seeds": list(seeds), "sweeps": pairs,
               "reruns": {name: {"test_accuracy": stats[name], "runs": rows} for name, rows in reruns.items()},
               "goals": goals}
    _print(results)
    print(f"wrote {C.write_json('sweep_quick' if quick else 'sweep', results)}")
    return results


def _print(r: dict) -> None:
    def values(params: dict) -> str:
        return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())

    rows = [[arm if arm != "none" else f"none (beside {pruner})", f"{s['wall_s']:.0f} s", s["finished"], s["pruned"],
             f"{100 * s['best_dev_f1']:.1f}", f"{100 * s['best_test_accuracy']:.1f}", values(s["best_params"])]
            for pruner, pair in r["sweeps"].items() for arm, s in pair.items()]
    C.print_table(f"Sweep: {r['trials']} TPE trials, rt-minilm-lora (4-bit MiniLM), dev macro-F1",
                  ["pruner", "wall", "finished", "pruned", "best dev F1", "its test acc", "best values"], rows)
    C.print_table(f"Best of the unpruned sweep vs the shipped config, test accuracy over seeds {r['seeds']}",
                  ["config", "test accuracy (mean ± sd)"],
                  [[name, Q._pm(v["test_accuracy"])] for name, v in r["reruns"].items()],
                  caption="; ".join(f"goal {k}: {v['value']} ({'met' if v['met'] else 'MISSED'})"
                                    for k, v in r["goals"].items()))


if __name__ == "__main__":
    run()
