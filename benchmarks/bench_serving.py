"""Serving benchmark: the hot-swap ``Engine`` and ``adapters serve`` against baselines run in the
same process, on the same machine, in the same run; every figure is a median of repeated runs and
every goal is a same-run ratio (or a small absolute latency), never an absolute speed.

Measured (details in bench_serving_gen.py and bench_serving_cls.py):

- mixed batches on ``smollm2-135m``: N rows for N distinct LoRA adapters (N = 1, 4, 8, 16) against
  N rows for one adapter; goal >= 0.85x tokens/s at 8. The 8-adapter batch against a plain peft
  model holding the same 8 adapters that serves one request at a time (``set_adapter`` then
  ``generate``); goal >= 5x.
- LoRA and prefix rows in one engine call against the same rows grouped by adapter type, one group
  after the other; goal >= 1x (one forward should not cost more than two).
- on ``minilm-l6`` (classification, ~300 KB LoRA adapters): what a request for another resident
  adapter than the previous request's adds to the engine's per-request overhead (goal <= 1 ms);
  ``Engine.load`` of a stored ref not yet resident (goal <= 30 ms); the per-request overhead with
  many resident adapters against one (goal <= 2x at 500). Per-request overhead: the request's wall
  time minus the time spent inside the transformer body's forward during that request. Loading is
  time-boxed: when the build cannot reach 500 adapters in its budget, the overhead at 500 is
  extrapolated from a line through the measured points (marked as such).
- HTTP: a real ``adapters serve`` (uvicorn, its own process, 127.0.0.1) under 32 concurrent httpx
  clients against the in-process engine running the same requests in full batches; goal >= 0.8x
  completion tokens/s.

Adapters are made with peft directly (``init_lora_weights=False``: random non-zero LoRA weights;
prefixes keep peft's random init), then copies with freshly drawn weights of the same scale, and
put in a temporary store under a temporary ``ADAPTERS_HOME``. Quantization is the engine's default
(4-bit). In the generation measurements every row decodes exactly ``max_new_tokens`` (the engine's
EOS set is emptied for them, ``min_new_tokens`` for plain peft), so all sides do equal work; the
HTTP comparison keeps EOS on both sides (the same greedy requests).

Goals use wall time. Next to each in-process throughput ratio the table also shows the ratio in
this process's CPU time: with one torch thread that is the work itself, which other programs on a
shared machine disturb far less than wall time, so a gap between the two columns is noise.

    python -m benchmarks serving [--quick]
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import common as C

GEN_BASE, CLS_BASE = "smollm2-135m", "minilm-l6"
LABELS = ["negative", "positive"]
GOAL_MIXED_8, GOAL_VS_PEFT, GOAL_LORA_PREFIX = 0.85, 5.0, 1.0
GOAL_SWITCH_MS, GOAL_COLD_MS, GOAL_RESIDENT, GOAL_HTTP = 1.0, 30.0, 2.0, 0.8
RESIDENT_TARGET = 500
_STARTED = [time.perf_counter()]
_LOADS: list[float] = []


def log(message: str) -> None:
    _LOADS.append(os.getloadavg()[0])
    print(f"  serving [{time.perf_counter() - _STARTED[0]:4.0f} s] {message}", flush=True)


def settings(quick: bool) -> dict:
    if quick:
        return {"tokens": 4, "repeats": 2, "repeats_at_8": 3, "sizes": [1, 8], "peft_requests": 4,
                "switch_rounds": 20, "cold_loads": 10, "resident_budget_s": 15.0, "resident_rounds": 10,
                "http_per_client": 1, "checkpoints": [25, 50, 100, 200, 300, 400, 500]}
    return {"tokens": 8, "repeats": 3, "repeats_at_8": 5, "sizes": [1, 4, 8, 16], "peft_requests": 6,
            "switch_rounds": 40, "cold_loads": 16, "resident_budget_s": 90.0, "resident_rounds": 15,
            "http_per_client": 2, "checkpoints": [25, 50, 100, 200, 300, 400, 500]}


def engine_quant() -> str:
    from adapters.runtime import Engine

    return inspect.signature(Engine.__init__).parameters["quant"].default


# ------------------------------------------------------------------------------------- adapters


class Maker:
    """Makes adapters with peft on a built-in base and stores copies with fresh random weights."""

    def __init__(self, store, work: Path, quant: str):
        self.store, self.work, self.quant = store, work, quant
        self.templates: dict[str, tuple[Path, dict, dict]] = {}
        self._models: dict = {}
        self.count = 0

    def template(self, key: str, base_name: str, method: str) -> None:
        import torch
        from peft import LoraConfig, PrefixTuningConfig, get_peft_model
        from safetensors.torch import load_file
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
        )

        from adapters.bases import resolve_base, weights_fingerprint
        from adapters.methods import default_lora_targets
        from adapters.modeling import quiet_loading

        base = resolve_base(base_name)
        cls = base_name == CLS_BASE
        torch.manual_seed(0)
        # A prefix leaves the model as it is, so a LoRA template made after it reuses the model;
        # LoRA layers go into the model, so it is dropped after a LoRA template.
        model = self._models.pop(base_name, None)
        if model is None:
            with quiet_loading():
                if cls:
                    model = AutoModelForSequenceClassification.from_pretrained(base.path, dtype=torch.float32,
                                                                               num_labels=len(LABELS))
                else:
                    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
        if method == "prefix":
            self._models[base_name] = model
        task_type = "SEQ_CLS" if cls else "CAUSAL_LM"
        if method == "lora":
            config = LoraConfig(task_type=task_type, r=8, lora_alpha=16, lora_dropout=0.05, init_lora_weights=False,
                                target_modules=default_lora_targets(model.config.model_type),
                                modules_to_save=["classifier"] if cls else None)
        else:
            config = PrefixTuningConfig(task_type=task_type, num_virtual_tokens=20)
        out = self.work / "templates" / key
        get_peft_model(model, config).save_pretrained(out)
        lineage = {"base": {"id": base.id, "revision": base.revision, "fingerprint": weights_fingerprint(base.path)},
                   "quant": self.quant, "method": {"kind": method},
                   "task": {"kind": "classification" if cls else "causal-lm", "labels": LABELS if cls else None}}
        (out / "adapter_manager.json").write_text(json.dumps(lineage, indent=2))
        if cls:
            (out / "label_map.json").write_text(json.dumps({"id2label": dict(enumerate(LABELS)),
                                                            "label2id": {n: i for i, n in enumerate(LABELS)}}))
        self.templates[key] = (out, lineage, load_file(str(out / "adapter_model.safetensors")))

    def make(self, key: str, name: str) -> tuple[str, Path]:
        """A copy of template ``key`` with new random weights (same shapes and spread); stored as
        ``name``. Returns (store ref, source directory)."""
        import torch
        from safetensors.torch import save_file

        src, lineage, state = self.templates[key]
        gen = torch.Generator().manual_seed(10_000 + self.count)
        self.count += 1
        fresh = {}
        for k, t in state.items():
            spread = float(t.float().std()) if t.numel() > 1 else 0.0
            fresh[k] = (torch.randn(t.shape, generator=gen) * (spread or 0.02)).to(t.dtype)
        dest = self.work / "made" / name
        shutil.copytree(src, dest)
        save_file(fresh, str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})
        return self.store.put(dest, name, lineage=lineage).ref, dest


# ------------------------------------------------------------------------------------- driver


@contextlib.contextmanager
def _home(path: Path):
    saved = os.environ.get("ADAPTERS_HOME")
    os.environ["ADAPTERS_HOME"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("ADAPTERS_HOME", None)
        else:
            os.environ["ADAPTERS_HOME"] = saved


def run(quick: bool = False) -> dict:
    import gc

    import torch

    C.apply_env()
    torch.set_num_threads(C.THREADS)
    _STARTED[0] = time.perf_counter()
    _LOADS.clear()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        with _home(work / "home"):
            results = _run(quick, work)
    finally:
        gc.collect()
        shutil.rmtree(work, ignore_errors=True)
    _print(results)
    path = C.write_json("serving", results)
    print(f"wrote {path}")
    return results


def _run(quick: bool, work: Path) -> dict:
    from benchmarks import bench_serving_cls as CLS
    from benchmarks import bench_serving_gen as GEN
    from store import Store

    s = settings(quick)
    quant = engine_quant()
    _LOADS.append(os.getloadavg()[0])
    start = time.perf_counter()
    root = work / "home"
    store = Store(root, durable=False)  # no fsync while building; what is written is identical
    server = GEN.Server(root, quant, work / "server.log")
    server.start()  # imports and loads its base while this process makes the adapters
    try:
        maker = Maker(store, work, quant)
        maker.template("gen-prefix", GEN_BASE, "prefix")
        maker.template("gen-lora", GEN_BASE, "lora")
        maker.template("cls-lora", CLS_BASE, "lora")
        gen = {"lora": [maker.make("gen-lora", f"gen-lora-{i:02d}") for i in range(max(8, *s["sizes"]))],
               "prefix": [maker.make("gen-prefix", f"gen-prefix-{i}") for i in range(4)]}
        setup_s = time.perf_counter() - start
        log(f"adapters made and stored (quant {quant})")
        results: dict = {"quick": quick, "settings": s, "quant": quant, "setup_s": round(setup_s, 1)}
        results["generation"] = GEN.measure(gen, quant, s, server)
    finally:
        server.stop()
    try:
        results["classification"] = CLS.measure(maker, root, quant, s)
    finally:
        store.close()
    _LOADS.append(os.getloadavg()[0])
    results["load_avg_1m"] = {"start": round(_LOADS[0], 2), "end": round(_LOADS[-1], 2),
                              "min": round(min(_LOADS), 2), "median": round(C.median(_LOADS), 2),
                              "max": round(max(_LOADS), 2), "samples": [round(x, 2) for x in _LOADS]}
    results["wall_s"] = round(time.perf_counter() - start, 1)
    results["goals"] = _goals(results)
    return results


def _goal_table(r: dict) -> dict[str, tuple[str, float, bool]]:
    """id -> (goal as printed, measured value, met)."""
    g, c = r["generation"], r["classification"]
    res = c["resident"]
    where = "measured" if res["reached"] >= RESIDENT_TARGET else f"extrapolated from {res['reached']}"
    mixed8, peft, lp = g["mixed"]["8"]["ratio"], g["vs_peft"]["ratio"], g["lora_prefix"]["ratio"]
    switch, cold, at500, http = (c["switch"]["extra_ms"], c["cold"]["median_ms"], res["overhead_ratio_500"],
                                 g["http"]["ratio"])
    return {
        "mixed8": (f"mixed 8 adapters / single adapter >= {GOAL_MIXED_8}", round(mixed8, 3), mixed8 >= GOAL_MIXED_8),
        "peft": (f"mixed 8 adapters / peft switch-per-request >= {GOAL_VS_PEFT:g}", round(peft, 2),
                 peft >= GOAL_VS_PEFT),
        "prefix": (f"LoRA+prefix one call / by type >= {GOAL_LORA_PREFIX:g}", round(lp, 3), lp >= GOAL_LORA_PREFIX),
        "switch": (f"switch resident adapter, ms <= {GOAL_SWITCH_MS:g}", round(switch, 3), switch <= GOAL_SWITCH_MS),
        "cold": (f"cold load ~300 KB from store, ms <= {GOAL_COLD_MS:g}", round(cold, 1), cold <= GOAL_COLD_MS),
        "resident": (f"overhead {RESIDENT_TARGET} resident / 1 <= {GOAL_RESIDENT:g} ({where})", round(at500, 2),
                     at500 <= GOAL_RESIDENT),
        "http": (f"HTTP 32 clients / in-process >= {GOAL_HTTP}", round(http, 3), http >= GOAL_HTTP),
    }


def _goals(r: dict) -> dict:
    return {name: {"value": value, "met": met} for name, value, met in _goal_table(r).values()}


def _print(r: dict) -> None:
    g, c, s = r["generation"], r["classification"], r["settings"]
    status = {k: C.goal(met) for k, (_, _, met) in _goal_table(r).items()}
    rows = []

    def cpu(m: dict) -> str:
        return C.ratio(m.get("cpu_ratio"))

    for n, m in g["mixed"].items():
        rows.append([f"{n} rows x {n} distinct LoRA vs {n} rows x 1 LoRA (tok/s)", f"{m['mixed']:.1f}",
                     f"{m['single']:.1f}", C.ratio(m["ratio"]), cpu(m), f">= {GOAL_MIXED_8}x" if n == "8" else "",
                     status["mixed8"] if n == "8" else ""])
    p = g["vs_peft"]
    rows.append(["8 distinct LoRA in one batch vs peft set_adapter + generate, one request at a time (tok/s)",
                 f"{p['engine']:.1f}", f"{p['peft']:.1f}", C.ratio(p["ratio"]), cpu(p), f">= {GOAL_VS_PEFT:g}x",
                 status["peft"]])
    lp = g["lora_prefix"]
    rows.append(["4 LoRA + 4 prefix rows in one call vs by type, one call after the other (tok/s)",
                 f"{lp['mixed']:.1f}", f"{lp['grouped']:.1f}", C.ratio(lp["ratio"]), cpu(lp),
                 f">= {GOAL_LORA_PREFIX:g}x", status["prefix"]])
    h = g["http"]
    what = (f"adapters serve, 32 HTTP clients, {h['requests']} requests (mean batch {h['mean_batch']:.1f} rows) "
            "vs in-process engine, full batches (tok/s)")
    rows.append([what, f"{h['http']:.1f}", f"{h['inproc']:.1f}", C.ratio(h["ratio"]), "", f">= {GOAL_HTTP}x",
                 status["http"]])
    sw = c["switch"]
    rows.append(["request for another resident adapter than the last: extra overhead (ms)", f"{sw['extra_ms']:+.2f}",
                 f"{sw['same_overhead_ms']:.2f}", "", "", f"<= {GOAL_SWITCH_MS:g} ms", status["switch"]])
    rows.append(["  same, extra latency (ms, info)", f"{sw['extra_latency_ms']:+.2f}", f"{sw['same_ms']:.1f}", "",
                 "", "", ""])
    rows.append(["  Engine.load of a resident ref (ms, info)", f"{sw['lookup_ms']:.3f}", "", "", "", "", ""])
    rows.append(["  plain peft set_adapter, 8 adapters (ms, info)", f"{p['set_adapter_ms']:.2f}", "", "", "", "", ""])
    cold = c["cold"]
    what = (f"cold Engine.load of a stored {cold['adapter_bytes'] / 1000:.0f} KB adapter, "
            f"{cold['resident_range']} resident (ms)")
    rows.append([what, f"{cold['median_ms']:.1f}", "", "", "", f"<= {GOAL_COLD_MS:g} ms", status["cold"]])
    rows.append(["  first load, builds the head template (ms, info)", f"{cold['first_ms']:.1f}", "", "", "", "", ""])
    res = c["resident"]
    for pt in res["points"]:
        rows.append([f"{pt['resident']} resident vs 1: per-request overhead (ms)", f"{pt['overhead_ms']:.1f}",
                     f"{pt['overhead_one_ms']:.1f}", C.ratio(pt["ratio"]), "", "", ""])
        rows.append([f"  latency (ms, info); a cold load at {pt['resident']} resident: {pt['load_ms']:.0f} ms",
                     f"{pt['latency_ms']:.1f}", f"{pt['latency_one_ms']:.1f}",
                     C.ratio(pt["latency_ms"] / pt["latency_one_ms"]), "", "", ""])
    label = "measured" if res["reached"] >= RESIDENT_TARGET else "extrapolated"
    rows.append([f"{RESIDENT_TARGET} resident vs 1: per-request overhead ({label})",
                 f"{res['overhead_500_ms']:.1f}", f"{res['overhead_one_ms']:.1f}",
                 C.ratio(res["overhead_ratio_500"]), "", f"<= {GOAL_RESIDENT:g}x", status["resident"]])
    la = r["load_avg_1m"]
    load = f"start {la['start']}, median {la['median']}, max {la['max']}, end {la['end']}"
    C.print_table(f"Serving: {GEN_BASE} (generation) / {CLS_BASE} (classification), {r['quant']}, "
                  f"{s['tokens']} new tokens per row, medians of {s['repeats']} ({s['repeats_at_8']} at 8)",
                  ["measure", "value", "baseline", "ratio", "CPU-time ratio", "goal", "status"], rows,
                  caption="value, baseline: medians over repeats; ratio: the median over repeats of value/baseline "
                  "within one repeat (adjacent runs), except vs peft: the ratio of the medians. "
                  f"Threads {C.THREADS}; load average (1 min) {load}; {r['wall_s']:.0f} s. "
                  f"{res['reached']} adapters made resident in {res['build_s']:.0f} s (budget "
                  f"{s['resident_budget_s']:.0f} s).")


if __name__ == "__main__":
    run()
