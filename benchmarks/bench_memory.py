"""Memory benchmark: both built-in bases loaded through ``adapters.base.loading.load_base_model`` in
fp32, 8-bit and 4-bit (MiniLM as a sequence classifier, SmolLM2 as a causal LM), and the serving
engine's memory with 1, 100 and 500 resident LoRA adapters of mixed ranks.

Per config: ``model.get_memory_footprint()`` (parameter + buffer bytes) and the peak RSS of a
subprocess that only imports the libraries and loads the model; ratios against fp32 of the same
base. An import-only subprocess gives the RSS floor (torch + transformers + bitsandbytes).

Resident adapters: one engine on SmolLM2 4-bit loads plain PEFT LoRA directories (ranks 4, 8, 16
and 32 in turn, on q/v or on all four attention projections, random weights); at each count the
process's RSS, what the engine counts against ``max_bytes`` and what its LoRA bank holds. For
scale, the bytes a bank would hold that pads every adapter to the largest rank in fp32 (the
layout before rank buckets) are computed from the same shapes.

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


RESIDENT_COUNTS = (1, 100, 500)
RESIDENT_RANKS = (4, 8, 16, 32)
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def _rss_bytes() -> int:
    import gc

    gc.collect()
    with open("/proc/self/status") as status:
        line = next(row for row in status if row.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _write_lora(out, modules: dict, layers: int, targets: tuple[str, ...], r: int, seed: int) -> None:
    """A PEFT LoRA directory, as peft saves one (bf16 tensors, peft's key names and config)."""
    import json

    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    state = {}
    for layer in range(layers):
        for target in targets:
            name = f"model.layers.{layer}.self_attn.{target}"
            module = modules[name]
            state[f"base_model.model.{name}.lora_A.weight"] = torch.randn(r, module.in_features, generator=g,
                                                                           dtype=torch.bfloat16)
            state[f"base_model.model.{name}.lora_B.weight"] = torch.randn(module.out_features, r, generator=g,
                                                                           dtype=torch.bfloat16)
    out.mkdir(parents=True)
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r, "lora_dropout": 0.0,
        "target_modules": list(targets), "bias": "none", "base_model_name_or_path": "smollm2-135m"}))


def _resident(counts: list[int]) -> dict:
    """Runs in the child: load adapters into one engine and read its memory at each count."""
    import tempfile
    from pathlib import Path

    from adapters.runtime import Engine

    engine = Engine("smollm2-135m", quant="4bit", device="cpu", max_adapters=max(counts), max_bytes=2**40)
    layers = engine.config.num_hidden_layers
    modules = dict(engine.model.named_modules())
    rows, padded_fp32, largest = [], 0, 0
    empty = _rss_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-resident-") as tmp:
        loaded, shapes = 0, []
        for count in counts:
            while loaded < count:
                r = RESIDENT_RANKS[loaded % len(RESIDENT_RANKS)]
                targets = ATTENTION if loaded % 2 else ATTENTION[::2]  # q, v or all four
                path = Path(tmp) / f"lora-{loaded}"
                _write_lora(path, modules, layers, targets, r, seed=loaded)
                engine.load(str(path))
                shapes.append([(modules[f"model.layers.{i}.self_attn.{t}"].in_features
                                + modules[f"model.layers.{i}.self_attn.{t}"].out_features)
                               for i in range(layers) for t in targets])
                largest = max(largest, r)
                loaded += 1
            padded_fp32 = sum(largest * sum(s) * 4 for s in shapes)
            infos = engine.adapters()
            # One mixed batch over 8 different adapters: the resident set serves.
            refs = [info.ref for info in infos[-8:]]
            engine.generate(["hello"] * len(refs), refs, max_new_tokens=2)
            rows.append({"adapters": count, "rss_bytes": _rss_bytes(), "rss_above_empty_engine_bytes":
                         _rss_bytes() - empty, "counted_bytes": sum(i.bytes for i in infos),
                         "bank_bytes": engine.lora.nbytes(), "largest_rank_fp32_bytes": padded_fp32})
    return {"empty_engine_rss_bytes": empty, "compute_dtype": str(engine.dtype), "rows": rows}


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
    counts = [1, 20] if quick else list(RESIDENT_COUNTS)
    results["resident"] = C.in_subprocess("benchmarks.bench_memory:_resident", {"counts": counts})["result"]
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
    resident = r["resident"]
    C.print_table(f"Memory: resident LoRA adapters, one engine on SmolLM2 4-bit ({resident['compute_dtype']})",
                  ["adapters", "RSS", "RSS above empty engine", "counted (max_bytes)", "LoRA bank",
                   "padded to largest rank, fp32"],
                  [[row["adapters"], C.mib(row["rss_bytes"]), C.mib(row["rss_above_empty_engine_bytes"]),
                    C.mib(row["counted_bytes"]), C.mib(row["bank_bytes"]), C.mib(row["largest_rank_fp32_bytes"])]
                   for row in resident["rows"]],
                  caption=f"ranks {', '.join(map(str, RESIDENT_RANKS))} in turn, on q/v or all four attention "
                          f"projections; an empty engine's RSS is {C.mib(resident['empty_engine_rss_bytes'])}, and "
                          "the RSS above it starts below what is counted because the allocator first reuses "
                          "memory the base's loading freed. The last column is computed from the same shapes, "
                          "for scale.")


if __name__ == "__main__":
    run()
