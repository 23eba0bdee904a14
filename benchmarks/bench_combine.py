"""Combining adapters: Rotten Tomatoes with 4-bit MiniLM-L6 (configs/rt-minilm-lora.yaml).

The config's training split (2000 rows; --quick: 400) is cut into two disjoint halves, A and B.
Three LoRA adapters are trained with the config's settings: on A, on B, and on all of it (the
reference); every run sees the same dev and test rows (500 each; --quick: 200). Then, on the test
split, accuracy and macro-F1 of:

- each half adapter and the full-data adapter;
- merges of A and B (``adapters.merge``): linear (weights 0.5/0.5), ties (weights 1/1, density 0.5,
  TIES's usual setting) and cat (0.5/0.5: the exact average of the two LoRA deltas, for reference);
  task heads are averaged in every merge;
- the ensemble ``ensemble:A+B`` (mean of the two adapters' probabilities, one mixed batch).

Also measured: ``adapters export --merged`` of the full-data adapter on the 4-bit base, read back
with plain transformers, against the adapter on its 4-bit base (max probability deviation and the
share of test predictions that agree).

Each training run and the scoring run is its own subprocess (one thread), in a scratch store.

    python -m benchmarks combine [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks import common as C

CONFIG = C.ROOT / "configs" / "rt-minilm-lora.yaml"
SHARED = ["training.seed=42", "data.split.seed=42"]
FULL = {"train": 2000, "eval": 500}
QUICK = {"train": 400, "eval": 200}
MERGES = {"linear": {"weights": [0.5, 0.5]},
          "ties": {"weights": [1.0, 1.0], "density": 0.5},
          "cat": {"weights": [0.5, 0.5]}}


def _prepare(work: str, train: int, eval_rows: int) -> dict:
    """Child: the config's splits written as three split directories (half A, half B, full) that
    share dev and test; returns their sizes."""
    import numpy as np

    from adapters.config import load_config
    from adapters.data.splits import load_splits

    cfg = load_config(CONFIG, SHARED + [f"data.max_train_samples={train}", f"data.max_eval_samples={eval_rows}"])
    splits = load_splits(cfg.data, cfg.task)
    names = splits.label_names

    def rows(dataset) -> list[dict]:
        return [{"text": r["text"], "label": names[r["label"]]} for r in dataset]

    train_rows = rows(splits.train)
    order = np.random.default_rng(7).permutation(len(train_rows))
    half = len(order) // 2
    parts = {"half_a": [train_rows[i] for i in order[:half]], "half_b": [train_rows[i] for i in order[half:]],
             "full": train_rows}
    for name, part in parts.items():
        folder = Path(work) / "data" / name
        folder.mkdir(parents=True)
        for split, data in (("train", part), ("dev", rows(splits.dev)), ("test", rows(splits.test))):
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    return {"train": {k: len(v) for k, v in parts.items()}, "dev": len(splits.dev), "test": len(splits.test),
            "labels": names}


def _train(name: str, source: str) -> dict:
    """Child: one training run through the public API, stored in the scratch store."""
    import time

    import adapters

    overrides = SHARED + [f"name={name}", f"data.source={source}", "data.text_column=text",
                          "data.label_column=label"]
    start = time.perf_counter()
    result = adapters.train(str(CONFIG), overrides=overrides)
    return {"ref": result.ref, "train_s": time.perf_counter() - start, "best_step": result.metrics.get("best_step"),
            "steps": result.metrics.get("steps"),
            "trainer_test": {k: result.metrics["test"].get(k) for k in ("accuracy", "f1_macro")}}


def _score(refs: dict, test_file: str, export_dir: str) -> dict:
    """Child: the merges, then every adapter, merge and the ensemble on the test split through one
    Engine on the 4-bit base; then the merged export's deviation."""
    import time

    import torch

    import adapters
    from adapters.combine.export_merged import export_merged
    from adapters.evaluation.metrics import classification_metrics

    rows = [json.loads(line) for line in Path(test_file).read_text().splitlines()]
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    merged, merge_s = {}, {}
    for method, options in MERGES.items():
        start = time.perf_counter()
        merged[method] = adapters.merge([refs["half_a"], refs["half_b"]], method=method, name=f"rt-{method}",
                                        **options).ref
        merge_s[method] = time.perf_counter() - start
    candidates = {"half_a": refs["half_a"], "half_b": refs["half_b"], "full": refs["full"],
                  **{f"merge_{m}": r for m, r in merged.items()},
                  "ensemble": f"ensemble:{refs['half_a']}+{refs['half_b']}"}
    engine = adapters.Engine("minilm-l6", quant="4bit")
    labels = None
    results, predictions = {}, {}
    for key, ref in candidates.items():
        start = time.perf_counter()
        out = []
        for i in range(0, len(texts), 64):
            out += engine.classify(texts[i:i + 64], adapter=ref)
        labels = labels or list(out[0]["probabilities"])
        y_true = [labels.index(g) for g in gold]
        y_pred = [labels.index(o["label"]) for o in out]
        metrics = classification_metrics(y_true, y_pred, labels)
        results[key] = {"ref": ref, "accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"],
                        "score_s": time.perf_counter() - start}
        predictions[key] = out

    export = Path(export_dir)
    start = time.perf_counter()
    info = export_merged(refs["full"], export)
    export_s = time.perf_counter() - start
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(export).eval()
    tok = AutoTokenizer.from_pretrained(export)
    deviations, agree = [], 0
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            batch = tok(texts[i:i + 64], truncation=True, max_length=64, padding=True, return_tensors="pt")
            probs = torch.softmax(model(**batch).logits.float(), -1)
            for p, row in zip(probs, predictions["full"][i:i + 64]):
                want = torch.tensor([row["probabilities"][lab] for lab in labels])
                deviations.append(float((p - want).abs().max()))
                agree += labels[int(p.argmax())] == row["label"]
    size = sum(f.stat().st_size for f in export.iterdir())
    return {"merged": merged, "merge_s": merge_s, "results": results,
            "export": {"quant_before_merge": info.quant, "dequantized": info.dequantized, "dtype": info.dtype,
                       "max_probability_deviation": max(deviations),
                       "mean_probability_deviation": sum(deviations) / len(deviations),
                       "prediction_agreement": agree / len(texts), "export_s": export_s, "bytes": size}}


def run(quick: bool = False) -> dict:
    sizes = QUICK if quick else FULL
    work = Path(tempfile.mkdtemp(prefix="bench-combine-"))
    saved_home = os.environ.get("ADAPTERS_HOME")
    os.environ["ADAPTERS_HOME"] = str(work / "store")  # children inherit: a scratch store
    try:
        data = C.in_subprocess("benchmarks.bench_combine:_prepare",
                               {"work": str(work), "train": sizes["train"], "eval_rows": sizes["eval"]})["result"]
        runs = {}
        for name in ("half_a", "half_b", "full"):
            r = C.in_subprocess("benchmarks.bench_combine:_train",
                                {"name": f"rt-{name.replace('_', '-')}", "source": str(work / "data" / name)})
            runs[name] = {**r["result"], "peak_rss_bytes": r["peak_rss_bytes"]}
            print(f"  combine: trained {name} ({data['train'][name]} rows) in {r['wall_s']:.0f} s: "
                  f"test accuracy {r['result']['trainer_test']['accuracy']:.4f}", flush=True)
        scored = C.in_subprocess("benchmarks.bench_combine:_score",
                                 {"refs": {k: v["ref"] for k, v in runs.items()},
                                  "test_file": str(work / "data" / "full" / "test.jsonl"),
                                  "export_dir": str(work / "export")})["result"]
    finally:
        if saved_home is None:
            os.environ.pop("ADAPTERS_HOME", None)
        else:
            os.environ["ADAPTERS_HOME"] = saved_home
        shutil.rmtree(work, ignore_errors=True)
    out = {"quick": quick, "config": str(CONFIG.relative_to(C.ROOT)), "data": data, "training": runs,
           "merges": {m: {**MERGES[m], "seconds": scored["merge_s"][m]} for m in MERGES},
           "results": scored["results"], "export_merged": scored["export"]}
    full = scored["results"]["full"]
    best_half = max(scored["results"]["half_a"]["accuracy"], scored["results"]["half_b"]["accuracy"])
    ensemble = scored["results"]["ensemble"]["accuracy"]
    out["goals"] = {
        "ensemble accuracy >= best half adapter": {"value": round(100 * (ensemble - best_half), 2),
                                                   "met": ensemble >= best_half},
        "merged 4-bit export max prob deviation < 1e-3": {
            "value": f"{scored['export']['max_probability_deviation']:.1e}",
            "met": scored["export"]["max_probability_deviation"] < 1e-3},
    }
    out["gap_to_full"] = {k: round(100 * (v["accuracy"] - full["accuracy"]), 2) for k, v in scored["results"].items()}
    _print(out)
    path = C.write_json("combine", out)
    print(f"wrote {path}")
    return out


def _print(r: dict) -> None:
    names = {"half_a": "adapter on half A", "half_b": "adapter on half B", "full": "adapter on all (reference)",
             "merge_linear": "merge A+B linear 0.5/0.5", "merge_ties": "merge A+B ties 1/1, density 0.5",
             "merge_cat": "merge A+B cat 0.5/0.5 (exact mean)", "ensemble": "ensemble A+B (mean probs)"}
    rows = [[names.get(k, k), f"{100 * v['accuracy']:.1f}", f"{r['gap_to_full'][k]:+.1f}",
             f"{100 * v['f1_macro']:.1f}"] for k, v in r["results"].items()]
    d, e = r["data"], r["export_merged"]
    C.print_table(f"Combining adapters: Rotten Tomatoes, 4-bit MiniLM-L6 (train {d['train']['full']} = "
                  f"{d['train']['half_a']} + {d['train']['half_b']}, test {d['test']})",
                  ["adapter", "test acc %", "vs all", "test macro-F1 %"], rows,
                  caption=f"export --merged of the reference (4-bit base dequantized to float32): max |Δp| "
                          f"{e['max_probability_deviation']:.1e}, mean {e['mean_probability_deviation']:.1e}, "
                          f"{100 * e['prediction_agreement']:.1f}% same predictions.")


if __name__ == "__main__":
    run()
