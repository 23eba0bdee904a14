"""Cross-validation benchmark: ``adapters cv`` with 5 folds on the shipped 4-bit MiniLM LoRA
(configs/rt-minilm-lora.yaml), Rotten Tomatoes.

The pool is bench_quality's train and dev rows (``data.split.seed`` 42; the test split stays held
out) capped at 2000 rows (``max_train_samples`` caps the pool before folding); each fold trains
on 4/5 of it, selects its epoch on the other fifth and is scored once on the whole test split.
Reported: accuracy and macro-F1 on each fold's dev fifth and on test, per fold and as mean ±
sample sd, and the wall time of the whole cross-validation. The sd of the dev fifths is the
spread that one fixed dev split hides.

    python -m benchmarks cv [--quick]
"""

from __future__ import annotations

from benchmarks import bench_quality as Q
from benchmarks import common as C

FOLDS = 5
KEEP = ("accuracy", "f1_macro")


def _cv(overrides: list[str], folds: int) -> dict:
    """Child: one cross-validation in a fresh store; its summary, folds and wall time."""
    import shutil
    import tempfile
    import time
    from pathlib import Path

    import adapters

    work = Path(tempfile.mkdtemp(prefix="bench-cv-"))
    try:
        start = time.perf_counter()
        result = adapters.cross_validate(str(Q.LORA), folds, overrides=overrides, store_root=work, progress=False)
        wall = time.perf_counter() - start
        splits = ("dev", "test")
        return {"wall_s": wall, "cv_id": result.cv_id,
                "summary": {split: {m: result.summary[split][m] for m in KEEP} for split in splits},
                "per_fold": [{"fold": f.fold, **{split: {m: f.metrics[split][m] for m in KEEP} for split in splits}}
                          for f in result.results]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(quick: bool = False) -> dict:
    shared = Q.SHARED + (Q.QUICK if quick else [])
    cv = C.in_subprocess("benchmarks.bench_cv:_cv", {"overrides": shared, "folds": FOLDS}, timeout=4 * 3600)["result"]
    results = {"quick": quick, "folds": FOLDS, "overrides": shared, **cv}
    _print(results)
    print(f"wrote {C.write_json('cv_quick' if quick else 'cv', results)}")
    return results


def _print(r: dict) -> None:
    def pm(stat: dict) -> str:
        return f"{100 * stat['mean']:.1f} ± {100 * stat['sd']:.1f}"

    rows = [[f"fold {f['fold']}"] + [f"{100 * f[split][m]:.1f}" for split in ("dev", "test") for m in KEEP]
            for f in r["per_fold"]]
    rows.append(["mean ± sd"] + [pm(r["summary"][split][m]) for split in ("dev", "test") for m in KEEP])
    C.print_table(f"{r['folds']}-fold cross-validation, rt-minilm-lora (4-bit MiniLM), {r['wall_s']:.0f} s",
                  ["", "dev accuracy", "dev macro-F1", "test accuracy", "test macro-F1"], rows)


if __name__ == "__main__":
    run()
