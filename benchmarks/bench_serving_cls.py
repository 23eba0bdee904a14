"""Classification part of the serving benchmark (see bench_serving.py), on ``minilm-l6`` with LoRA
adapters of ~300 KB (r=8 on query/value plus the classifier): mixed-batch throughput against peft's
own mixed batch, switching between resident adapters, cold loads from the store, and the
per-request overhead as the resident set grows.

Throughput baseline: peft's mixed batch, a ``PeftModel`` on the same 4-bit base with the engine's
device plan (same quantization, same compute dtype) holding the same adapters (their classifiers
as ``modules_to_save``), called as ``model(**tokenizer(texts, padding=True), adapter_names=[...])``
on the same ``CLS_ROWS`` texts, tokenizing inside the timed call as the engine does. With D
distinct adapters row i takes adapter i mod D. Alternated with the engine's calls (order reversed
every repeat), medians with min-max, ratios of adjacent runs; labels are compared row by row. At 8
distinct adapters also, for information, the same peft model with its adapters disabled: the bare
base and its classifier, the most any LoRA path could give.

Where the time goes (torch.profiler, the engine's 64-row call at 8 distinct adapters, 4-bit
MiniLM, bf16 compute, one thread, Intel Xeon with AVX512-BF16 + AMX): bf16 GEMMs after
dequantization 29 %, attention (SDPA) 15 %, GELU 13 %, dtype copies 9 %, the LoRA matmuls 9 %,
adds 6 %, layer norms 4 %, 4-bit dequantization 5 %. The base model's own work is ~90 % of the
call, so the bound on any LoRA path is the bare base: peft with its adapters disabled, measured
here at 8 adapters (about 1.2-1.4x peft's mixed batch). A 1.5x lead over peft's mixed batch would
need a faster base forward, not a faster LoRA. Two ways to get one were measured and dropped:
the 64 rows are 61 % real tokens, but splitting them into length buckets (one forward each, the
split chosen to minimise padded tokens plus a fixed cost per pass) was slower at every fixed
cost tried, because every pass pays ~12 ms of fixed work (each layer's 4-bit weights
dequantized, module calls) against ~100 ms for the whole padded batch; and one masked matmul
over the batch's distinct adapters ``((x @ A_cat) * mask) @ B_cat`` in place of the per-row
gather + bmm was no faster in float32 (1.07 ms against 0.60 ms per layer call).

Per-request overhead: the wall time of a one-text ``Engine.classify`` minus the time spent inside
the shared transformer body's forward during that call (timed with forward hooks on the body, a
plain PyTorch API; the body forward includes the LoRA matmuls). What is left is what the engine
adds around the model: tokenizing, resolving and pinning the adapter, routing rows to adapters,
the classifier head. Subtracting the forward of the same call removes most of the noise of a
shared machine. The engine with one resident adapter and the one with many are called in
alternating order, round by round; figures are medians over rounds.
"""

from __future__ import annotations

import time

from benchmarks import common as C
from benchmarks.bench_serving import CLS_BASE, RESIDENT_TARGET, log

TEXT = "a gripping, beautifully acted film that never lets up"
CLS_ROWS = 64
_GOOD = ["a gripping, beautifully acted film", "warm, funny and smart", "the best thriller in years",
         "a moving story told with care", "sharp writing and a great cast", "pure joy from start to finish",
         "an ambitious, rewarding drama", "clever, tense and never boring"]
_BAD = ["a dull, lifeless mess", "predictable from the first scene", "two hours I will never get back",
        "the plot makes no sense at all", "flat characters and clumsy dialogue", "loud, long and empty",
        "a tired retread of better films", "not even the actors seem to care"]
CLS_TEXTS = [(_GOOD if i % 2 else _BAD)[(i // 2) % 8] + ("" if i % 3 else ", and the ending is something else")
             for i in range(CLS_ROWS)]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class BodyClock:
    """Time spent inside ``engine.body``'s forward (on CUDA, synchronized at both ends)."""

    def __init__(self, engine):
        self.spent = 0.0
        self._t = 0.0
        engine.body.register_forward_pre_hook(self._pre)
        engine.body.register_forward_hook(self._post)

    def _pre(self, module, args):
        _sync()
        self._t = time.perf_counter()

    def _post(self, module, args, output):
        _sync()
        self.spent += time.perf_counter() - self._t


class Timed:
    """One engine's requests: (latency, overhead) per call."""

    def __init__(self, engine):
        self.engine, self.clock = engine, BodyClock(engine)

    def __call__(self, ref: str) -> tuple[float, float]:
        self.clock.spent = 0.0
        start = time.perf_counter()
        self.engine.classify([TEXT], adapter=ref)
        wall = time.perf_counter() - start
        return wall, wall - self.clock.spent


def measure(maker, root, quant: str, s: dict) -> dict:
    from adapters.runtime import Engine, store_resolver

    one = Engine(CLS_BASE, quant=quant, resolver=store_resolver(root), max_adapters=2 * RESIDENT_TARGET)
    many = Engine(CLS_BASE, quant=quant, resolver=store_resolver(root), max_adapters=2 * RESIDENT_TARGET)
    refs: list[str] = []
    loads: list[tuple[int, float]] = []  # (adapters resident before the load, seconds)

    def add() -> None:
        ref, _ = maker.make("cls-lora", f"cls-lora-{len(refs):04d}")
        start = time.perf_counter()
        many.load(ref)
        loads.append((len(refs), time.perf_counter() - start))
        refs.append(ref)

    out: dict = {}
    # ---- cold loads: stored refs not yet resident (the first one also builds the classifier head template)
    for _ in range(s["cold_loads"] + 1):
        add()
    size = (maker.work / "made" / "cls-lora-0000" / "adapter_model.safetensors").stat().st_size
    cold = [dt * 1000 for _, dt in loads[1:]]
    out["cold"] = {"first_ms": loads[0][1] * 1000, "median_ms": C.median(cold), "runs_ms": cold,
                   "adapter_bytes": size, "resident_range": f"1-{len(cold)}"}
    log(f"cold load {out['cold']['median_ms']:.1f} ms ({size / 1000:.0f} KB), first LoRA "
        f"{out['cold']['first_ms']:.0f} ms")
    while len(refs) < max(s["sizes"]):
        add()
    out["throughput"] = throughput(many, refs, [maker.work / "made" / f"cls-lora-{i:04d}" for i in range(len(refs))],
                                   quant, s)
    one.load(refs[0])
    call_one, call_many = Timed(one), Timed(many)
    for _ in range(2):  # warm-up
        call_one(refs[0])
        call_many(refs[1])

    # ---- switching: a request for another resident adapter than the previous request's
    k = min(8, len(refs))
    lookups = []
    for i in range(200):
        start = time.perf_counter()
        many.load(refs[i % k])
        lookups.append(time.perf_counter() - start)
    same, other = [], []
    for r in range(s["switch_rounds"]):
        x, y = refs[r % k], refs[(r + 1) % k]
        call_many(x)
        if r % 2 == 0:  # same first, then the switch; odd rounds the other way round
            same.append(call_many(x))
            other.append(call_many(y))
        else:
            other.append(call_many(y))
            same.append(call_many(y))
    out["switch"] = {
        "extra_ms": C.median([o[1] - m[1] for o, m in zip(other, same)]) * 1000,
        "extra_latency_ms": C.median([o[0] - m[0] for o, m in zip(other, same)]) * 1000,
        "same_ms": C.median([m[0] for m in same]) * 1000, "same_overhead_ms": C.median([m[1] for m in same]) * 1000,
        "lookup_ms": C.median(lookups) * 1000, "resident": len(refs), "rounds": len(same)}
    sw = out["switch"]
    log(f"switch: overhead {sw['extra_ms']:+.2f} ms, latency {sw['extra_latency_ms']:+.2f} ms over "
        f"{sw['same_ms']:.1f} ms")

    # ---- per-request overhead as the resident set grows (time-boxed build)
    def point(n: int) -> dict:
        rows: dict[str, list] = {"one": [], "many": []}
        for r in range(s["resident_rounds"]):
            ref = refs[(r * 37) % n]
            pair = [("one", call_one, refs[0]), ("many", call_many, ref)]
            for name, call, adapter in pair if r % 2 == 0 else pair[::-1]:
                rows[name].append(call(adapter))
        recent = [dt for m, dt in loads if m >= n - 5]
        pt = {"resident": n, "overhead_ms": C.median([x[1] for x in rows["many"]]) * 1000,
              "overhead_one_ms": C.median([x[1] for x in rows["one"]]) * 1000,
              "latency_ms": C.median([x[0] for x in rows["many"]]) * 1000,
              "latency_one_ms": C.median([x[0] for x in rows["one"]]) * 1000, "load_ms": C.median(recent) * 1000}
        pt["ratio"] = pt["overhead_ms"] / pt["overhead_one_ms"]
        log(f"{n} resident: overhead {pt['overhead_ms']:.1f} ms vs {pt['overhead_one_ms']:.1f} ms with 1 "
            f"({pt['ratio']:.2f}x); latency {pt['latency_ms']:.0f} vs {pt['latency_one_ms']:.0f} ms; "
            f"cold load {pt['load_ms']:.0f} ms")
        return pt

    points = []
    start = time.perf_counter()
    budget = s["resident_budget_s"]
    for target in s["checkpoints"]:
        while len(refs) < target and time.perf_counter() - start < budget:
            add()
        points.append(point(len(refs)))
        if len(refs) < target:
            break
    build_s = time.perf_counter() - start
    out["resident"] = _resident_summary(points, len(refs), build_s, RESIDENT_TARGET)
    out["resident"]["load_curve_ms"] = [(n, round(dt * 1000, 1)) for n, dt in loads if n % 10 == 0]
    return out


def throughput(engine, refs: list[str], paths: list, quant: str, s: dict) -> dict:
    """Rows/s of ``engine.classify`` over CLS_TEXTS with D distinct adapters against peft's mixed
    batch on the same rows (module docstring)."""
    import gc

    import torch
    from peft import PeftModel

    from adapters.base.loading import load_base_model
    from adapters.base.quiet import quiet_loading
    from benchmarks.bench_serving import LABELS
    from benchmarks.bench_serving_gen import _alternating, paired, spread

    sizes = s["sizes"]
    model, _ = load_base_model(engine.base, "classification", quant, engine.plan, label_names=LABELS)
    names = [f"a{i}" for i in range(max(sizes))]
    with quiet_loading():
        model = PeftModel.from_pretrained(model, str(paths[0]), adapter_name=names[0])
        for name, path in zip(names[1:], paths[1:]):
            model.load_adapter(str(path), adapter_name=name)
    model.eval()
    tok = engine.tokenizer
    device = model.get_input_embeddings().weight.device

    def timed(fn):
        def call():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            return {"wall": CLS_ROWS / (time.perf_counter() - wall), "cpu": CLS_ROWS / (time.process_time() - cpu)}
        return call

    @torch.no_grad()
    def peft_labels(row_names: list[str] | None) -> list[str]:
        batch = tok(CLS_TEXTS, padding=True, truncation=True, return_tensors="pt").to(device)
        if row_names is None:
            with model.disable_adapter():
                logits = model(**batch).logits
        else:
            logits = model(**batch, adapter_names=row_names).logits
        return [LABELS[i] for i in logits.float().argmax(-1).tolist()]

    def engine_labels(row_refs: list[str]) -> list[str]:
        return [r["label"] for r in engine.classify(CLS_TEXTS, row_refs)]

    out: dict = {"rows": CLS_ROWS, "sizes": {}}
    for d in sizes:
        row_refs = [refs[i % d] for i in range(CLS_ROWS)]
        row_names = [names[i % d] for i in range(CLS_ROWS)]
        same = sum(a == b for a, b in zip(engine_labels(row_refs), peft_labels(row_names)))  # also a warm-up
        variants = {"engine": timed(lambda r=row_refs: engine_labels(r)),
                    "peft_mixed": timed(lambda n=row_names: peft_labels(n))}
        if d > 1:
            variants["engine_one"] = timed(lambda: engine_labels([refs[0]] * CLS_ROWS))
        if d == 8:
            peft_labels(None)
            variants["peft_base"] = timed(lambda: peft_labels(None))
        runs = _alternating(variants, s["repeats_at_8"] if d == 8 else s["repeats_vs_peft"])
        m = {"rates": {k: spread([r["wall"] for r in v]) for k, v in runs.items()},
             "cpu_rates": {k: spread([r["cpu"] for r in v]) for k, v in runs.items()},
             "identical_labels": same, "runs": runs, "distinct": d}
        for a, b in (("engine", "peft_mixed"), ("engine", "engine_one"), ("peft_base", "peft_mixed"),
                     ("engine", "peft_base")):
            if a in runs and b in runs:
                m[f"{a}/{b}"] = paired(runs, a, b)
        out["sizes"][str(d)] = m
        log(f"classify {CLS_ROWS} rows, {d} distinct LoRA: engine {m['rates']['engine']['median']:.0f} rows/s, "
            f"peft mixed {m['rates']['peft_mixed']['median']:.0f} ({m['engine/peft_mixed']['ratio']:.2f}x); "
            f"{same}/{CLS_ROWS} labels equal")
    model = None  # frees the peft model; the closures above still hold this name's cell
    gc.collect()
    return out


def _resident_summary(points: list[dict], reached: int, build_s: float, target: int) -> dict:
    """The overhead at ``target`` resident: measured when reached, else a least-squares line through
    (1, overhead with one) and the measured points, evaluated at ``target``."""
    base = C.median([p["overhead_one_ms"] for p in points])
    if reached >= target:
        at = next(p for p in points if p["resident"] >= target)["overhead_ms"]
    else:
        xs = [1.0] + [float(p["resident"]) for p in points]
        ys = [base] + [p["overhead_ms"] for p in points]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-12, sum((x - mx) ** 2 for x in xs))
        at = my + slope * (target - mx)
    return {"points": points, "reached": reached, "build_s": build_s, "overhead_one_ms": base,
            "overhead_500_ms": at, "overhead_ratio_500": at / base, "slope_ms_per_adapter": (at - base) / (target - 1)}
