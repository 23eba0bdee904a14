"""Distillation benchmark: a 4-bit SmolLM2-135M sentiment classifier distilled into the shipped
4-bit MiniLM LoRA (configs/rt-minilm-lora.yaml) on Rotten Tomatoes.

1. The teacher: the shipped config on the SmolLM2 decoder (LoRA on its attention projections),
   trained once (seed 42) on the same 2000 training rows and stored.
2. The student, per training seed in ``SEEDS``: trained on the labels alone (the shipped config as
   it is) and distilled from the teacher (``adapters.distill``, T = 2, alpha = 0.5, the defaults),
   both selected on dev and scored once on the whole test split. Test accuracy and macro-F1 as
   mean ± sd over the seeds, and the paired difference distilled - labels only.
3. Classification throughput, same engine (``adapters.Engine``, 4-bit, one thread), the test
   texts in batches of 32: the teacher on its SmolLM2 engine against the student on its MiniLM
   engine, timed alternately, median of 5 with the spread.

Data as in bench_quality (``data.split.seed`` 42: the same train, dev and test rows for every
run). Training runs go two at a time, each its own subprocess with one thread (only their
accuracy counts); the throughput runs alone.

    python -m benchmarks distill [--quick]
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import bench_quality as Q
from benchmarks import common as C

TEACHER = ["name=rt-smollm2-lora", "base=smollm2-135m", "lora.target_modules=[q_proj,k_proj,v_proj,o_proj]",
           "training.seed=42"]
TEMPERATURE, ALPHA = 2.0, 0.5
BATCH, RUNS = 32, 5
KEEP = ("accuracy", "f1_macro")


def _teacher(store: str, overrides: list[str]) -> dict:
    """Child: train the teacher into ``store``; its ref and test metrics."""
    import adapters

    result = adapters.train(str(Q.LORA), overrides=overrides + TEACHER, store_root=store, progress=False)
    return {"ref": result.ref, "test": {k: result.metrics["test"][k] for k in KEEP},
            "dev": {k: result.metrics["dev"][k] for k in KEEP}}


def _student(store: str, teacher: str, overrides: list[str]) -> dict:
    """Child: the student distilled from ``teacher``, stored in ``store``; its ref and metrics."""
    import adapters

    result = adapters.distill(str(Q.LORA), teacher=teacher, temperature=TEMPERATURE, alpha=ALPHA,
                              overrides=overrides, store_root=store, progress=False)
    return {"ref": result.ref, "test": {k: result.metrics["test"][k] for k in KEEP},
            "dev": {k: result.metrics["dev"][k] for k in KEEP}}


def _throughput(store: str, teacher: str, student: str, overrides: list[str]) -> dict:
    """Child: rows/s of the teacher and the student on the test texts, timed alternately."""
    import statistics
    import time

    from adapters.api import _as_config
    from adapters.data.splits import load_splits
    from adapters.runtime import Engine
    from adapters.runtime.resolvers import store_resolver
    from adapters_store import Store

    cfg = _as_config(str(Q.LORA), overrides)
    texts = list(load_splits(cfg.data, cfg.task).test["text"])
    engines = {}
    with Store(store) as s:
        for role, ref in (("teacher", teacher), ("student", student)):
            base = s.resolve(ref).base
            engines[role] = (Engine(base, quant="4bit", resolver=store_resolver(store)), ref)

    def once(role: str) -> float:
        engine, ref = engines[role]
        start = time.perf_counter()
        for i in range(0, len(texts), BATCH):
            engine.classify(texts[i:i + BATCH], adapter=ref)
        return len(texts) / (time.perf_counter() - start)

    for role in engines:  # warm-up: first-use conversions, caches, allocator
        once(role)
    rates = {role: [] for role in engines}
    for _ in range(RUNS):
        for role in engines:
            rates[role].append(once(role))
    return {"rows": len(texts), "batch": BATCH,
            **{role: {"median": statistics.median(r), "min": min(r), "max": max(r), "runs": r}
               for role, r in rates.items()}}


def run(quick: bool = False) -> dict:
    shared = Q.SHARED + (Q.QUICK if quick else [])
    seeds = Q.QUICK_SEEDS if quick else Q.SEEDS
    store = Path(tempfile.mkdtemp(prefix="bench-distill-"))
    try:
        teacher = C.in_subprocess("benchmarks.bench_distill:_teacher",
                                  {"store": str(store), "overrides": shared}, timeout=4 * 3600)["result"]
        print(f"  teacher {teacher['ref']}: test accuracy {teacher['test']['accuracy']:.4f}", flush=True)

        def student(kind: str, seed: int) -> dict:
            overrides = shared + [f"training.seed={seed}"]
            if kind == "labels only":
                return C.in_subprocess("benchmarks.bench_quality:_train",
                                       {"config": str(Q.LORA), "overrides": overrides})
            return C.in_subprocess("benchmarks.bench_distill:_student",
                                   {"store": str(store), "teacher": teacher["ref"], "overrides": overrides})

        with ThreadPoolExecutor(2) as pool:
            jobs = {(kind, seed): pool.submit(student, kind, seed)
                    for seed in seeds for kind in ("labels only", "distilled")}
            runs = {key: job.result()["result"] for key, job in jobs.items()}
        students = {kind: {str(seed): runs[(kind, seed)] for seed in seeds} for kind in ("labels only", "distilled")}
        stats = {kind: {metric: Q._mean_sd([r["test"][metric] for r in by_seed.values()]) for metric in KEEP}
                 for kind, by_seed in students.items()}
        paired = Q._mean_sd([students["distilled"][str(s)]["test"]["accuracy"]
                             - students["labels only"][str(s)]["test"]["accuracy"] for s in seeds])
        speed = C.in_subprocess("benchmarks.bench_distill:_throughput",
                                {"store": str(store), "teacher": teacher["ref"],
                                 "student": students["distilled"][str(seeds[0])]["ref"], "overrides": shared})["result"]
    finally:
        shutil.rmtree(store, ignore_errors=True)
    results = {"quick": quick, "seeds": list(seeds), "temperature": TEMPERATURE, "alpha": ALPHA,
               "teacher_overrides": TEACHER, "teacher": teacher, "students": students, "test": stats,
               "paired_accuracy_gain": paired, "throughput": speed,
               "student_speedup": speed["student"]["median"] / speed["teacher"]["median"]}
    _print(results)
    print(f"wrote {C.write_json('distill_quick' if quick else 'distill', results)}")
    return results


def _print(r: dict) -> None:
    t = r["teacher"]["test"]
    rows = [["teacher (SmolLM2-135M, seed 42)", f"{100 * t['accuracy']:.1f}", f"{100 * t['f1_macro']:.1f}"]]
    rows += [[f"student (MiniLM), {kind}", Q._pm(s["accuracy"]), Q._pm(s["f1_macro"])] for kind, s in r["test"].items()]
    C.print_table(f"Distillation on Rotten Tomatoes, T={r['temperature']:g}, alpha={r['alpha']:g}, "
                  f"test split, seeds {r['seeds']}", ["model", "accuracy", "macro-F1"], rows,
                  caption=f"distilled - labels only, paired by seed: {Q._pm(r['paired_accuracy_gain'], signed=True)} "
                          "points of accuracy")
    s = r["throughput"]
    C.print_table(f"Classification throughput, {s['rows']} test rows in batches of {s['batch']}, 4-bit, "
                  f"median of {RUNS} (min-max)", ["model", "rows/s"],
                  [[role, f"{s[role]['median']:.0f} ({s[role]['min']:.0f}-{s[role]['max']:.0f})"]
                   for role in ("teacher", "student")],
                  caption=f"student / teacher: {C.ratio(r['student_speedup'])}")


if __name__ == "__main__":
    run()
