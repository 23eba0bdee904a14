"""Classification part of the serving benchmark (see bench_serving.py), on ``minilm-l6`` with LoRA
adapters of ~300 KB (r=8 on query/value plus the classifier): switching between resident adapters,
cold loads from the store, and the per-request overhead as the resident set grows.

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


class BodyClock:
    """Time spent inside ``engine.body``'s forward."""

    def __init__(self, engine):
        self.spent = 0.0
        self._t = 0.0
        engine.body.register_forward_pre_hook(self._pre)
        engine.body.register_forward_hook(self._post)

    def _pre(self, module, args):
        self._t = time.perf_counter()

    def _post(self, module, args, output):
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
    from adapters.runtime import Engine

    one = Engine(CLS_BASE, quant=quant, store_root=root, max_adapters=2 * RESIDENT_TARGET)
    many = Engine(CLS_BASE, quant=quant, store_root=root, max_adapters=2 * RESIDENT_TARGET)
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
