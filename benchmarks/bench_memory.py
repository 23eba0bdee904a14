"""Memory benchmark: both built-in bases loaded through ``adapters.base.loading.load_base_model`` in
fp32, 8-bit and 4-bit (MiniLM as a sequence classifier, SmolLM2 as a causal LM).

Per config: ``model.get_memory_footprint()`` (parameter + buffer bytes) and the peak RSS of a
subprocess that only imports the libraries and loads the model; ratios against fp32 of the same
base. An import-only subprocess gives the RSS floor (torch + transformers + bitsandbytes).

    python -m benchmarks memory [--quick]
"""

from __future__ import annotations

from benchmarks import common as C

BASES = {"minilm-l6": "classification", "smollm2-135m": "causal-lm"}
QUANTS = ("none", "8bit", "4bit")
QUANT_LABEL = {"none": "fp32", "8bit": "8-bit", "4bit": "4-bit"}
GOAL = ("smollm2-135m", "4bit", 0.35)  # SmolLM2 4-bit footprint <= 0.35x fp32


def _imports_only() -> dict:
    # Imported, not used: the child's RSS after these is the floor every load is measured above.
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from adapters.base import loading  # noqa: F401

    return {}


def _load(base: str, task: str, quant: str) -> dict:
    """Runs in the child: load the base as the trainer does and report what it holds."""
    import torch

    from adapters.base.device import plan_device
    from adapters.base.loading import load_base_model, load_tokenizer
    from adapters.base.resolve import resolve_base

    resolved = resolve_base(base)
    plan = plan_device("cpu")
    labels = ["neg", "pos"] if task == "classification" else None
    pad = load_tokenizer(resolved, task).pad_token_id
    model, heads = load_base_model(resolved, task, quant, plan, labels, pad_token_id=pad)
    params = {}
    for p in model.parameters():
        params[str(p.dtype)] = params.get(str(p.dtype), 0) + p.numel()
    n_params = sum(p.numel() for p in model.parameters())
    return {"footprint_bytes": int(model.get_memory_footprint()), "heads": heads,
            "params_by_dtype": params, "stored_params": n_params,
            "quantized_linears": sum(1 for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")),
            "compute_dtype": str(plan.compute_dtype), "torch_threads": torch.get_num_threads()}


def run(quick: bool = False) -> dict:
    # Make sure SmolLM2's GGUF is converted before anything is measured (45 s the first time).
    C.in_subprocess("adapters.base.resolve:resolve_base", {"name": "smollm2-135m"})
    floor_runs = [C.in_subprocess("benchmarks.bench_memory:_imports_only")["peak_rss_bytes"]
                  for _ in range(1 if quick else 2)]
    floor = C.median(floor_runs)
    repeats = 1 if quick else 2  # RSS is near-deterministic; two runs guard against a fluke
    results: dict = {"import_only_peak_rss_bytes": floor, "bases": {}}
    for base, task in BASES.items():
        rows = {}
        for quant in QUANTS:
            runs = [C.in_subprocess("benchmarks.bench_memory:_load", {"base": base, "task": task, "quant": quant})
                    for _ in range(repeats)]
            rows[quant] = {**runs[0]["result"],
                           "peak_rss_bytes": C.median([r["peak_rss_bytes"] for r in runs]),
                           "load_wall_s": C.median([r["wall_s"] for r in runs])}
        fp32 = rows["none"]
        for row in rows.values():
            row["footprint_vs_fp32"] = row["footprint_bytes"] / fp32["footprint_bytes"]
            row["peak_rss_vs_fp32"] = row["peak_rss_bytes"] / fp32["peak_rss_bytes"]
            row["rss_above_imports_bytes"] = row["peak_rss_bytes"] - floor
            row["rss_above_imports_vs_fp32"] = row["rss_above_imports_bytes"] / max(fp32["peak_rss_bytes"] - floor, 1)
        results["bases"][base] = {"task": task, "configs": rows}
    base, quant, limit = GOAL
    got = results["bases"][base]["configs"][quant]["footprint_vs_fp32"]
    results["goals"] = {f"{base} {QUANT_LABEL[quant]} footprint <= {limit}x fp32": {"value": round(got, 3),
                                                                                    "met": got <= limit}}
    _print(results)
    path = C.write_json("memory", {"quick": quick, **results})
    print(f"wrote {path}")
    return results


def _print(r: dict) -> None:
    rows = []
    for base, entry in r["bases"].items():
        for quant, row in entry["configs"].items():
            rows.append([base, QUANT_LABEL[quant], C.mib(row["footprint_bytes"]), C.ratio(row["footprint_vs_fp32"]),
                         C.mib(row["peak_rss_bytes"]), C.ratio(row["peak_rss_vs_fp32"])])
    goals = "; ".join(f"goal {k}: {v['value']:.3f}x ({'met' if v['met'] else 'MISSED'})" for k, v in r["goals"].items())
    C.print_table("Memory: bases loaded via load_base_model (CPU)",
                  ["base", "quant", "footprint", "vs fp32", "peak RSS", "vs fp32"], rows,
                  caption=f"footprint: parameters and buffers as loaded; peak RSS: the whole loading process "
                          f"(a Python with torch and transformers imported peaks at "
                          f"{C.mib(r['import_only_peak_rss_bytes'])}). {goals}")


if __name__ == "__main__":
    run()
