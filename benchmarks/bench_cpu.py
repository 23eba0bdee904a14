"""CPU compute dtype and bitsandbytes' weight repacking, measured on this CPU through the project's
own code paths (``python -m benchmarks cpu [--quick]``).

The project picks the compute dtype of 4-bit layers per device (adapters/base/device.py: bf16 on CPUs
with AVX512-BF16/AMX, else fp32) and turns bitsandbytes' CPU inference repacking off
(``keep_4bit_layout`` in ``load_base_model``). This benchmark checks both choices here:

1. Training: ``adapters.training.trainer.Trainer.run`` on configs/rt-minilm-lora.yaml (4-bit NF4 MiniLM-L6,
   LoRA r=8, built-in Rotten Tomatoes rows, batch 32, max_length 64), a fixed number of steps,
   with ``compute_dtype=float32`` vs ``compute_dtype=bfloat16`` (the config field; no patching).
   Non-pad tokens/s over steps ``WARMUP_STEPS+1..N`` (from the end of step WARMUP_STEPS to the end
   of step N, from ``events.jsonl`` with log_every=1); the steps before are the warm-up and are
   excluded, as are loading, tokenizing and the final evaluation. Both dtypes draw the same seeded
   batches, so they count the same tokens. Training never repacks (train mode, inputs need grad):
   the child checks that no layer was repacked. Every repeat is a fresh subprocess (the project's
   convention: a whole ``Trainer.run`` per measurement, nothing shared between runs).
   Runs of a few seconds in separate processes on this shared VM scatter widely (one dtype's
   repeats differ by up to 1.5x), so a second figure interleaves the two dtypes step by step in
   ONE process (``_train_interleaved``: both trainers' own ``prepare()``, then the body of
   ``Trainer._loop`` for step i on fp32 and on bf16, the order flipped every step, same batches),
   with the per-step speed-ups (fp32 seconds / bf16 seconds of the same batch) as its spread. The
   two trainers share nothing but accelerate's process-wide state, which both set alike (CPU, no
   mixed precision).
2. Engine classification: ``adapters.runtime.Engine(minilm-l6, quant="4bit", device="cpu",
   compute_dtype=...)`` and ``classify`` (batches of 32 texts) with the LoRA classifier the first
   fp32 training run saved, for fp32 / bf16 compute with bitsandbytes' own layout ("unpacked",
   the project's behaviour) and, only when ``bitsandbytes.functional.has_avx512bf16()``, with the
   repacked layout. Plus an unquantized fp32 engine (quant="none") as the exactness reference
   (its speed is reported for information). Exactness: the max abs difference of the class
   probabilities of every row against fp32 unpacked and against the unquantized reference, and
   how many predicted labels agree with fp32 unpacked.

   The repacked variant needs the one thing the project has no switch for: ``load_base_model``
   calls ``keep_4bit_layout`` (imported into ``adapters.base.loading``), which turns repacking off.
   ``repacking_allowed()`` makes that one call a no-op while such an engine is built, then sets
   bitsandbytes' own ``Linear4bit.support_avx512bf16_for_cpu = True`` on its layers, so the first
   eval no-grad forward (the warm-up pass) repacks them exactly as bitsandbytes would by default.
   Library code is not changed; the patch is undone on exit and checked.

   All engine variants live in ONE subprocess, so their passes can be interleaved finely (one pass
   of every variant per round). That is safe because everything a variant changes is state of its
   own model: the packed layout, the bias dtype bitsandbytes casts in place, the LoRA bank, the
   heads. Nothing process-global is switched (the dtype is the Engine's ``compute_dtype``
   argument; the keep_4bit_layout patch is gone before any pass runs). The child verifies it after
   the timing: every repacked engine has all its 4-bit layers packed, every unpacked one none, and
   each variant's probabilities in its last timed pass equal those of its warm-up pass.

3. One NF4 ``Linear4bit`` 384->1536 with 1,536 rows, the layer-level figures adapters/base/device.py
   quotes (measured on an AMD EPYC without AMX): eval unpacked / repacked per dtype, train
   forward+backward unpacked, and the dense matmul of that shape; it explains the model-level ratios
   on the CPU at hand.

Method: threads fixed (``BENCH_THREADS``, default 1); variants interleaved, never in blocks:
training runs alternate fp32/bf16 with the order reversed every repeat (AB BA AB ...), engine
rounds run one pass of every variant with the order rotated every round; a warm-up per variant
(training: the first steps of every run; engine: one untimed pass, which also does the repacking)
is excluded. Reported: the median of the repeats, their min-max, the ratio of medians against fp32
(unpacked) and the min-max of the paired per-repeat ratios (each repeat against the fp32 unpacked
measured next to it). The load average is recorded at the start and the end: this 2-core VM is
shared, so look at the spread before reading a ratio.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks import common as C

CONFIG = C.ROOT / "configs" / "rt-minilm-lora.yaml"
BASE = "minilm-l6"
WARMUP_STEPS = 2
ENGINE_BATCH = 32
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def _overrides(steps: int) -> list[str]:
    return [f"training.max_steps={steps}", "training.log_every=1", "training.eval_every=1000000",
            "training.early_stopping=null", "data.max_eval_samples=32", "training.eval_batch_size=32",
            "training.gradient_checkpointing=false", "device=cpu"]


def _cpu_facts() -> dict:
    """What decides the dtype and the repacking on this machine (in a child: it imports torch)."""
    import importlib.util

    import torch
    from bitsandbytes.functional import has_avx512bf16

    from adapters.base.device import plan_device

    return {"flags": C.cpu_flags(),
            "bnb_has_avx512bf16": bool(has_avx512bf16()),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "auto_compute_dtype": str(plan_device("cpu").compute_dtype).replace("torch.", ""),
            # bitsandbytes tries the hub's `kernels` package for the packed CPU gemm; without it,
            # its own C kernel (gemv_4bit_inference_cpu_nf4_bf16) runs the packed layers
            "kernels_package": importlib.util.find_spec("kernels") is not None}


def _four_bit_layers(model) -> list:
    from bitsandbytes.nn import Linear4bit

    return [m for m in model.modules() if isinstance(m, Linear4bit)]


# -------------------------------------------------------------------------------------- training


def _train(config: str, overrides: list[str], compute_dtype: str, keep_adapter: str | None = None) -> dict:
    """Child: the project's trainer, exactly as ``adapters train`` runs it, for one compute dtype."""
    import time

    import torch

    from adapters.base.device import COMPUTE_DTYPES, is_repacked
    from adapters.config import load_config
    from adapters.training.trainer import Trainer

    cfg = load_config(config, [*overrides, f"compute_dtype={compute_dtype}"])
    work = Path(tempfile.mkdtemp(prefix="bench-cpu-train-"))
    start = time.perf_counter()
    trainer = Trainer(cfg, work / "adapter", work / "run", progress=False)
    trainer.run()
    total = time.perf_counter() - start
    expected = COMPUTE_DTYPES[compute_dtype]
    layers = _four_bit_layers(trainer.model)
    assert trainer.plan.compute_dtype == expected, trainer.plan
    dtypes = {layer.compute_dtype for layer in layers}
    assert layers and dtypes == {expected}, dtypes
    repacked = sum(is_repacked(layer) for layer in layers)  # incl. the final eval (no_grad, eval mode)
    run = C.trained_steps(trainer, work / "run")
    steps, tokens, times, n = run["steps"], run["tokens"], run["times"], len(run["steps"])
    w = WARMUP_STEPS
    if keep_adapter:
        shutil.copytree(work / "adapter", keep_adapter, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    return {"steps": n, "tokens_per_s": sum(tokens[w:]) / (times[-1] - times[w - 1]),
            "measured_tokens": sum(tokens[w:]), "measured_s": times[-1] - times[w - 1],
            "losses": [e["loss"] for e in steps], "layers_4bit": len(layers), "layers_repacked": repacked,
            "param_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in trainer.model.parameters()}),
            "total_s": total, "torch_threads": torch.get_num_threads()}


def _train_interleaved(config: str, overrides: list[str]) -> dict:
    """Child: both dtypes' trainers in one process, their steps interleaved one by one (fp32, bf16,
    then bf16, fp32, ...) over the same seeded batches, so a change in machine load lands on both
    within a second. Setup is the trainer's own ``prepare()``; each step is the body of
    ``Trainer._loop`` (collate, forward, backward, clip, optimizer, scheduler), without its logging."""
    import time

    import torch

    from adapters.base.device import COMPUTE_DTYPES, is_repacked
    from adapters.config import load_config
    from adapters.training.trainer import Trainer

    trainers = {}
    for name, dtype in DTYPES.items():
        cfg = load_config(config, [*overrides, f"compute_dtype={dtype}"])
        work = Path(tempfile.mkdtemp(prefix="bench-cpu-steps-"))
        trainer = Trainer(cfg, work / "adapter", work / "run", progress=False)
        trainer.prepare()
        assert trainer.plan.compute_dtype == COMPUTE_DTYPES[dtype], trainer.plan
        trainer.model.train()
        trainers[name] = trainer
        shutil.rmtree(work, ignore_errors=True)
    batches = {name: tr._batches(0) for name, tr in trainers.items()}
    assert batches["fp32"] == batches["bf16"]
    steps = trainers["fp32"].total_steps
    t = trainers["fp32"].cfg.training

    def step(tr, idx) -> None:  # the body of Trainer._loop
        train = tr.tokenized["train"]
        rows = train.select(idx).select_columns([c for c in train.column_names if c != "length"])
        batch = tr.collator([rows[i] for i in range(len(rows))])
        batch = {k: v.to(tr.accelerator.device) for k, v in batch.items()}
        with tr.accelerator.accumulate(tr.model):
            loss = tr.model(**batch).loss
            tr.accelerator.backward(loss)
            if tr.accelerator.sync_gradients and t.max_grad_norm:
                tr.accelerator.clip_grad_norm_(tr.model.parameters(), t.max_grad_norm)
            tr.optimizer.step()
            tr.scheduler.step()
            tr.optimizer.zero_grad()
        loss.item()

    lengths = trainers["fp32"].tokenized["train"]["length"]
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for i, idx in enumerate(batches["fp32"][:steps]):
        for name in list(trainers) if i % 2 == 0 else list(reversed(trainers)):
            start = time.perf_counter()
            step(trainers[name], idx)
            seconds[name].append(time.perf_counter() - start)
    w = WARMUP_STEPS
    tokens = [sum(lengths[i] for i in idx) for idx in batches["fp32"][:steps]]
    repacked = sum(is_repacked(layer) for tr in trainers.values() for layer in _four_bit_layers(tr.model))
    return {"steps": steps, "measured_tokens": sum(tokens[w:]), "layers_repacked": repacked,
            "tokens_per_s": {n: sum(tokens[w:]) / sum(v[w:]) for n, v in seconds.items()},
            "step_s": seconds, "step_tokens": tokens, "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------- engine


@contextlib.contextmanager
def repacking_allowed():
    """While an engine is built, let bitsandbytes repack its 4-bit weights as it does by default.

    Why a patch: the project has no switch for it on purpose (``load_base_model`` always calls
    ``keep_4bit_layout``); this benchmark measures what that choice costs or saves. The name is
    patched where load_base_model looks it up (``adapters.base.loading`` imported it), and restored."""
    import adapters.base.loading as modeling

    original = modeling.keep_4bit_layout
    modeling.keep_4bit_layout = lambda model: 0
    try:
        yield
    finally:
        modeling.keep_4bit_layout = original


def _variants(has_bf16_kernel: bool) -> list[dict]:
    out = [{"name": "fp32 unpacked", "quant": "4bit", "dtype": "float32", "repacked": False},
           {"name": "bf16 unpacked", "quant": "4bit", "dtype": "bfloat16", "repacked": False}]
    if has_bf16_kernel:
        out += [{"name": "fp32 repacked", "quant": "4bit", "dtype": "float32", "repacked": True},
                {"name": "bf16 repacked", "quant": "4bit", "dtype": "bfloat16", "repacked": True}]
    out.append({"name": "fp32 unquantized", "quant": "none", "dtype": "float32", "repacked": False})
    return out


def _engines(adapter: str, rows: int, repeats: int) -> dict:
    """Child: every engine variant in one process, passes interleaved round by round."""
    import time

    import torch
    from bitsandbytes.functional import has_avx512bf16

    import adapters.base.loading as modeling
    from adapters.base.device import COMPUTE_DTYPES, is_repacked, keep_4bit_layout
    from adapters.config import load_config
    from adapters.data.splits import load_splits
    from adapters.runtime.engine import Engine, directory_resolver

    cfg = load_config(str(CONFIG), ["data.max_eval_samples=null"])
    texts = list(load_splits(cfg.data, cfg.task).test["text"])[:rows]
    assert len(texts) == rows, len(texts)
    batches = [texts[i:i + ENGINE_BATCH] for i in range(0, rows, ENGINE_BATCH)]

    variants = _variants(bool(has_avx512bf16()))
    engines, build_s = {}, {}
    for v in variants:
        start = time.perf_counter()
        with repacking_allowed() if v["repacked"] else contextlib.nullcontext():
            engine = Engine(BASE, quant=v["quant"], device="cpu", compute_dtype=v["dtype"],
                            resolver=directory_resolver, preload=[adapter])
        assert modeling.keep_4bit_layout is keep_4bit_layout  # the patch is gone again
        assert engine.plan.compute_dtype == COMPUTE_DTYPES[v["dtype"]], engine.plan
        for layer in _four_bit_layers(engine.model):
            assert layer.compute_dtype == COMPUTE_DTYPES[v["dtype"]], layer.compute_dtype
            if v["repacked"]:
                layer.support_avx512bf16_for_cpu = True  # bitsandbytes' default on this CPU
        engines[v["name"]] = engine
        build_s[v["name"]] = time.perf_counter() - start

    def one_pass(engine) -> tuple[float, list[list[float]]]:
        probs = []
        start = time.perf_counter()
        for batch in batches:
            for r in engine.classify(batch, adapter=adapter):
                probs.append(list(r["probabilities"].values()))
        return time.perf_counter() - start, probs

    names = [v["name"] for v in variants]
    warm_s, first, last = {}, {}, {}
    for name in names:  # warm-up, untimed for the results: the repacked ones repack here
        warm_s[name], first[name] = one_pass(engines[name])
    passes: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(repeats):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:  # every round all variants, the order rotated
            seconds, last[name] = one_pass(engines[name])
            passes[name].append(seconds)

    layout = {}
    for v in variants:
        layers = _four_bit_layers(engines[v["name"]].model)
        packed = sum(is_repacked(layer) for layer in layers)
        layout[v["name"]] = {"layers_4bit": len(layers), "layers_repacked": packed}
        if v["repacked"]:
            assert packed == len(layers) > 0, (v["name"], packed, len(layers))
        else:
            assert packed == 0, (v["name"], packed)

    def max_diff(a, b) -> float:
        return float((torch.tensor(a) - torch.tensor(b)).abs().max())

    def labels(p) -> list[int]:
        return torch.tensor(p).argmax(-1).tolist()

    ref4, ref = first["fp32 unpacked"], first["fp32 unquantized"]
    exact = {}
    for name in names:
        exact[name] = {"max_abs_vs_fp32_unpacked": max_diff(first[name], ref4),
                       "max_abs_vs_unquantized": max_diff(first[name], ref),
                       "labels_agree_fp32_unpacked": sum(a == b for a, b in zip(labels(first[name]), labels(ref4))),
                       "max_abs_warmup_vs_last_pass": max_diff(first[name], last[name])}
    lengths = [len(ids) for ids in engines["fp32 unpacked"].tokenizer(texts)["input_ids"]]
    del engines  # the layer figures below run alone
    return {"rows": rows, "batch": ENGINE_BATCH, "repeats": repeats, "variants": variants, "cpu": _cpu_facts(),
            "layer": _layer(max(repeats, 7)),
            "rows_per_s": {n: [rows / s for s in passes[n]] for n in names},
            "warmup_s": warm_s, "build_s": build_s, "layout": layout, "exactness": exact,
            "mean_tokens_per_row": sum(lengths) / len(lengths), "torch_threads": torch.get_num_threads()}


def _layer(repeats: int, rows: int = 1536, d_in: int = 384, d_out: int = 1536) -> dict:
    """One NF4 ``Linear4bit`` (MiniLM's 384->1536 FFN shape, double quantization, as the project
    quantizes), the same layer-level figures adapters/base/device.py quotes from another CPU: eval forward
    unpacked / repacked per compute dtype, train forward+backward unpacked, plus the dense fp32 and
    bf16 matmul of the same shape. Variants interleaved; median ms over ``repeats`` after a warm-up."""
    import time

    import torch
    from bitsandbytes.functional import has_avx512bf16
    from bitsandbytes.nn import Linear4bit

    from adapters.base.device import is_repacked

    torch.manual_seed(0)
    dense = torch.nn.Linear(d_in, d_out)
    x = torch.randn(rows, d_in)
    x_grad = x.clone().requires_grad_()
    layers = {}
    for dt_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for repacked in (False, True) if has_avx512bf16() else (False,):
            layer = Linear4bit(d_in, d_out, compute_dtype=dtype, compress_statistics=True, quant_type="nf4")
            layer.load_state_dict(dense.state_dict())
            layer = layer.to("cpu").eval()  # .to quantizes
            layer.support_avx512bf16_for_cpu = repacked
            layers[f"{dt_name} {'repacked' if repacked else 'unpacked'}"] = layer

    def train_step(layer):
        layer.train()
        layer(x_grad).sum().backward()
        layer.eval()

    cases = {}
    for name, layer in layers.items():
        cases[f"{name} eval"] = torch.no_grad()(lambda layer=layer: layer(x))
        if name.endswith("unpacked"):
            cases[f"{name} train fwd+bwd"] = lambda layer=layer: train_step(layer)
    for dt_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        xd, wd = x.to(dtype), dense.weight.detach().to(dtype)
        cases[f"{dt_name} dense eval"] = torch.no_grad()(lambda xd=xd, wd=wd: torch.nn.functional.linear(xd, wd))
    for fn in cases.values():  # warm-up; repacks the repacked layers
        fn()
    for name, layer in layers.items():
        assert is_repacked(layer) == name.endswith(" repacked"), name
    times: dict[str, list[float]] = {k: [] for k in cases}
    names = list(cases)
    for rnd in range(repeats):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            cases[name]()
            times[name].append(1000 * (time.perf_counter() - start))
    with torch.no_grad():
        ref = torch.nn.functional.linear(x, dense.weight, dense.bias)
        err = {name: float((layer(x).float() - ref).abs().max()) for name, layer in layers.items()}
    return {"rows": rows, "shape": [d_in, d_out], "repeats": repeats,
            "ms": {k: {"median": C.median(v), "min": min(v), "max": max(v)} for k, v in times.items()},
            "max_abs_vs_dense_fp32": err}


# ---------------------------------------------------------------------------------------- driver


def _stats(values: list[float], base: list[float]) -> dict:
    """Median, min-max, the ratio of medians against ``base`` and the paired per-repeat ratios."""
    paired = [v / b for v, b in zip(values, base)]
    return {"median": C.median(values), "min": min(values), "max": max(values), "values": values,
            "vs_base": C.median(values) / C.median(base), "paired_ratio_median": C.median(paired),
            "paired_ratio_min": min(paired), "paired_ratio_max": max(paired)}


def run(quick: bool = False) -> dict:
    steps = 8 if quick else 30
    train_repeats = 2 if quick else 5
    rows = 96 if quick else 320
    engine_repeats = 3 if quick else 6
    load_start = [round(x, 2) for x in os.getloadavg()]
    on = " ".join(f for f, present in C.cpu_flags().items() if present) or "none of " + ", ".join(C.CPU_FLAGS)
    print(f"  cpu flags: {on}; "
          f"load {'/'.join(map(str, load_start))}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    adapter = work / "adapter"
    train_runs: dict[str, list[dict]] = {k: [] for k in DTYPES}
    for rep in range(train_repeats):  # AB BA AB ...: a drift in machine load hits both alike
        order = list(DTYPES) if rep % 2 == 0 else list(reversed(DTYPES))
        for name in order:
            keep = str(adapter) if name == "fp32" and not adapter.exists() else None
            r = C.in_subprocess("benchmarks.bench_cpu:_train",
                                {"config": str(CONFIG), "overrides": _overrides(steps),
                                 "compute_dtype": DTYPES[name], "keep_adapter": keep})
            train_runs[name].append({**r["result"], "wall_s": r["wall_s"], "peak_rss_bytes": r["peak_rss_bytes"]})
            print(f"  train {name} run {rep + 1}/{train_repeats}: {r['result']['tokens_per_s']:,.0f} tok/s "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    fp32_tok = [r["tokens_per_s"] for r in train_runs["fp32"]]
    training = {name: _stats([r["tokens_per_s"] for r in rs], fp32_tok) for name, rs in train_runs.items()}
    for name, rs in train_runs.items():
        losses = [r["losses"] for r in rs]
        training[name].update(
            final_loss=losses[0][-1],
            # same seed, same batches: repeats of one dtype should give the same losses
            loss_repeat_spread=max(abs(a - b) for run in losses for a, b in zip(run, losses[0])),
            max_abs_loss_vs_fp32=max(abs(a - b) for a, b in zip(losses[0], train_runs["fp32"][0]["losses"])),
            layers_repacked=max(r["layers_repacked"] for r in rs), param_dtypes=rs[0]["param_dtypes"],
            peak_rss_bytes=C.median([r["peak_rss_bytes"] for r in rs]))

    inter = C.in_subprocess("benchmarks.bench_cpu:_train_interleaved",
                            {"config": str(CONFIG), "overrides": _overrides(steps)})["result"]
    w = WARMUP_STEPS
    per_step = [a / b for a, b in zip(inter["step_s"]["fp32"][w:], inter["step_s"]["bf16"][w:])]
    interleaved = {"tokens_per_s": inter["tokens_per_s"], "layers_repacked": inter["layers_repacked"],
                   "bf16_vs_fp32": inter["tokens_per_s"]["bf16"] / inter["tokens_per_s"]["fp32"],
                   # per step: fp32 seconds / bf16 seconds, i.e. bf16's speed-up on that batch
                   "per_step_speedup_median": C.median(per_step), "per_step_speedup_min": min(per_step),
                   "per_step_speedup_max": max(per_step), "steps": inter["steps"], "step_s": inter["step_s"],
                   "step_tokens": inter["step_tokens"]}
    print(f"  train, steps interleaved in one process: bf16/fp32 {interleaved['bf16_vs_fp32']:.2f}x "
          f"(load {os.getloadavg()[0]:.2f})", flush=True)

    print(f"  engine: {rows} rows in batches of {ENGINE_BATCH}, {engine_repeats} rounds ...", flush=True)
    eng = C.in_subprocess("benchmarks.bench_cpu:_engines",
                          {"adapter": str(adapter), "rows": rows, "repeats": engine_repeats})["result"]
    shutil.rmtree(work, ignore_errors=True)
    facts = eng["cpu"]
    base_rows = eng["rows_per_s"]["fp32 unpacked"]
    engine = {name: {**_stats(v, base_rows), **eng["exactness"][name], **eng["layout"][name],
                     "warmup_s": eng["warmup_s"][name]}
              for name, v in eng["rows_per_s"].items()}
    load_end = [round(x, 2) for x in os.getloadavg()]

    goals = {}
    bf16_kernel = facts["bnb_has_avx512bf16"] or facts["flags"]["avx512_bf16"] or facts["flags"]["amx_bf16"]
    if bf16_kernel:
        tr, er = training["bf16"]["vs_base"], engine["bf16 unpacked"]["vs_base"]
        ti = interleaved["bf16_vs_fp32"]
        goals["bf16 (project's choice here) >= fp32: training tok/s (Trainer.run)"] = {"value": round(tr, 3),
                                                                                       "met": tr >= 1}
        goals["bf16 (project's choice here) >= fp32: training tok/s (steps interleaved)"] = {
            "value": round(ti, 3), "met": ti >= 1}
        goals["bf16 (project's choice here) >= fp32: engine rows/s"] = {"value": round(er, 3), "met": er >= 1}
        goals["project chooses bf16 on this CPU"] = {"value": facts["auto_compute_dtype"],
                                                     "met": facts["auto_compute_dtype"] == "bfloat16"}
        if "bf16 repacked" in engine:
            up = engine["bf16 unpacked"]["median"] / engine["bf16 repacked"]["median"]
            goals["unpacked bf16 >= repacked bf16 rows/s"] = {"value": round(up, 3), "met": up >= 1}
    else:
        goals["fp32 chosen (no AVX512-BF16)"] = {"value": facts["auto_compute_dtype"],
                                                 "met": facts["auto_compute_dtype"] == "float32"}

    results = {"quick": quick, "cpu": facts, "load_avg_start": load_start, "load_avg_end": load_end,
               "training": {"steps": steps, "warmup_steps": WARMUP_STEPS, "repeats": train_repeats,
                            "config": str(CONFIG.relative_to(C.ROOT)), "summary": training, "runs": train_runs,
                            "interleaved": interleaved},
               "engine": {"rows": rows, "batch": ENGINE_BATCH, "repeats": engine_repeats,
                          "mean_tokens_per_row": eng["mean_tokens_per_row"], "build_s": eng["build_s"],
                          "summary": engine},
               "layer": eng["layer"],
               "goals": goals}
    _print(results)
    path = C.write_json("cpu", results)
    print(f"wrote {path}")
    return results


def _print(r: dict) -> None:
    t, e = r["training"], r["engine"]

    def spread(s: dict, fmt: str = ",.0f") -> str:
        return f"{s['min']:{fmt}}-{s['max']:{fmt}}"

    def paired(s: dict) -> str:
        return f"{s['paired_ratio_min']:.2f}-{s['paired_ratio_max']:.2f}"

    rows = []
    for name, s in t["summary"].items():
        rows.append([f"train {name} (Trainer.run)", f"{s['median']:,.0f} tok/s", spread(s), C.ratio(s["vs_base"]),
                     paired(s), f"loss {s['final_loss']:.4f}, |dloss| {s['max_abs_loss_vs_fp32']:.2g}",
                     f"{s['layers_repacked']}"])
    ti = t["interleaved"]
    for name in DTYPES:
        speed = ti["tokens_per_s"][name] / ti["tokens_per_s"]["fp32"]
        rows.append([f"train {name} (steps interleaved)", f"{ti['tokens_per_s'][name]:,.0f} tok/s",
                     "-", C.ratio(speed), "-" if name == "fp32" else
                     f"{ti['per_step_speedup_min']:.2f}-{ti['per_step_speedup_max']:.2f}",
                     "-" if name == "fp32" else f"per-step median {ti['per_step_speedup_median']:.2f}x",
                     f"{ti['layers_repacked']}"])
    for name, s in e["summary"].items():
        rows.append([f"engine {name}", f"{s['median']:,.1f} rows/s", spread(s, ",.1f"), C.ratio(s["vs_base"]),
                     paired(s), f"{s['max_abs_vs_fp32_unpacked']:.2g} / {s['max_abs_vs_unquantized']:.2g} / "
                     f"{s['labels_agree_fp32_unpacked']}/{e['rows']}",
                     f"{s['layers_repacked']}/{s['layers_4bit']}"])
    cpu = r["cpu"]
    flags = " ".join(f for f, on in cpu["flags"].items() if on) or "none of " + ", ".join(C.CPU_FLAGS)
    goals = "; ".join(f"{k}: {v['value']} ({'met' if v['met'] else 'MISSED'})" for k, v in r["goals"].items())
    same_engine = max(s["max_abs_warmup_vs_last_pass"] for s in e["summary"].values())
    same_train = max(s["loss_repeat_spread"] for s in t["summary"].values())
    C.print_table(
        f"CPU compute dtype and 4-bit layout: MiniLM-L6 NF4 LoRA; train {t['steps']} steps x batch 32 "
        f"(first {t['warmup_steps']} excluded), median of {t['repeats']}; engine {e['rows']} rows in batches of "
        f"{e['batch']} (~{e['mean_tokens_per_row']:.0f} tokens/row), median of {e['repeats']} rounds",
        ["variant", "median", "min-max", "vs fp32", "paired ratios", "exactness", "repacked"], rows,
        caption=(f"Engine exactness: max |dp| vs fp32 unpacked / vs unquantized fp32 / labels equal to fp32 "
                 f"unpacked (max |dp| warm-up vs last pass, any variant: {same_engine:.2g}). Training: loss at the "
                 f"last step, max |dloss| over the steps vs fp32 (between repeats of one dtype: {same_train:.2g}). "
                 f"'fp32 repacked' runs bitsandbytes' bf16 kernel (it casts fp32 inputs to bf16). "
                 f"CPU flags: {flags}; bitsandbytes has_avx512bf16: {cpu['bnb_has_avx512bf16']}; torch: "
                 f"{cpu['torch_cpu_capability']}; auto dtype: {cpu['auto_compute_dtype']}; kernels package: "
                 f"{cpu['kernels_package']}. Load avg (1/5/15 min) start "
                 f"{'/'.join(map(str, r['load_avg_start']))}, end {'/'.join(map(str, r['load_avg_end']))}. "
                 f"Threads: {C.THREADS}. {goals}."))

    lay = r["layer"]
    rows = []
    for name, m in lay["ms"].items():
        base = lay["ms"]["fp32 unpacked train fwd+bwd" if "train" in name else "fp32 unpacked eval"]["median"]
        layer_name = name.rsplit(" ", 1)[0] if "train" not in name else name.split(" train")[0]
        err = lay["max_abs_vs_dense_fp32"].get(layer_name)
        rows.append([name, f"{m['median']:.1f} ms", f"{m['min']:.1f}-{m['max']:.1f}", C.ratio(m["median"] / base),
                     "-" if err is None else f"{err:.3g}"])
    C.print_table(f"One NF4 Linear4bit {lay['shape'][0]}->{lay['shape'][1]}, {lay['rows']} rows (the shape "
                  f"adapters/base/device.py quotes), median of {lay['repeats']}", ["case", "time", "min-max",
                  "time vs fp32 unpacked", "max |out - dense fp32|"], rows)


if __name__ == "__main__":
    run()
