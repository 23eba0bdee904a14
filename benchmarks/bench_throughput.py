"""Training throughput: ``adapters.train`` against a plain Hugging Face ``Trainer`` + peft script.

Both sides train the same thing: MiniLM-L6 loaded in 4-bit NF4 (fp32 compute on this CPU), the
exact ``LoraConfig`` the project builds for configs/rt-minilm-lora.yaml, the same Rotten Tomatoes
train rows, batch size, max_length, learning rate, warmup and number of optimizer steps, no
evaluation while training, no gradient checkpointing. The plain script is written the way people
write it: ``datasets.map`` tokenization, ``DataCollatorWithPadding``, default ``Trainer`` settings
(random sampler, no length grouping).

Measured in each (own subprocess, runs alternating, medians over repeats):
- non-pad tokens per second over the training steps: tokens of steps 2..N divided by the time from
  the end of step 1 to the end of step N (model loading, tokenization, the first step's warm-up and
  everything after the last step are excluded). Ours: the ``step`` events of ``events.jsonl``
  (``training.log_every=1``) and the batches the trainer drew; plain: a ``TrainerCallback`` and a
  collator that counts ``attention_mask``.
- peak RSS of the whole subprocess (``os.wait4`` rusage).

Also reported: the share of non-pad tokens in the batches and "all tok/s" (padding included, i.e.
the model's raw work rate): equal all-tok/s means equal per-step cost, so the non-pad tokens/s gap
is what length grouping saves. BENCH_THROUGHPUT_GROUPED=1 adds a third variant, the plain script
with ``train_sampling_strategy="group_by_length"`` (transformers' LengthGroupedSampler).

    python -m benchmarks throughput [--quick]
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from benchmarks import common as C

CONFIG = C.ROOT / "configs" / "rt-minilm-lora.yaml"
GOAL_SPEEDUP = 1.2


def _common_overrides(steps: int) -> list[str]:
    return [f"training.max_steps={steps}", "training.log_every=1", "training.eval_every=1000000",
            "training.early_stopping=null", "data.max_eval_samples=32", "training.eval_batch_size=32",
            "training.gradient_checkpointing=false"]


# ---------------------------------------------------------------------------------------- ours


def _ours(config: str, overrides: list[str]) -> dict:
    """Child: the project's trainer, exactly as ``adapters.train`` runs it."""
    import time

    from adapters.config import load_config
    from adapters.runlog import read_events
    from adapters.trainer import Trainer

    cfg = load_config(config, overrides)
    work = Path(tempfile.mkdtemp(prefix="bench-ours-"))
    start = time.perf_counter()
    trainer = Trainer(cfg, work / "adapter", work / "run", progress=False)
    trainer.run()
    total = time.perf_counter() - start
    steps = [e for e in read_events(work / "run" / "events.jsonl") if e["event"] == "step"]
    lengths = trainer.tokenized["train"]["length"]
    batches = trainer._batches(0)  # the seeded batches the loop drew (max_steps < one epoch)
    n = len(steps)
    assert n == cfg.training.max_steps <= len(batches), (n, len(batches))
    tokens = [sum(lengths[i] for i in batch) for batch in batches[:n]]
    padded = [len(batch) * max(lengths[i] for i in batch) for batch in batches[:n]]
    times = [e["time"] for e in steps]
    return {"steps": n, "tokens_per_s": sum(tokens[1:]) / (times[-1] - times[0]),
            "step_s": (times[-1] - times[0]) / (n - 1), "non_pad_fraction": sum(tokens) / sum(padded),
            "tokens_per_s_logged_median": sorted(e["tokens_per_s"] for e in steps[1:])[(n - 1) // 2],
            "total_s": total, "train_rows": len(lengths)}


# ---------------------------------------------------------------------------- plain HF script


def _export_data(config: str, path: Path) -> dict:
    """Child: the exact train rows the project's config selects, as JSONL, plus what the plain
    script needs to build the same model (base path, quantization skip list, the peft config)."""
    import torch

    from adapters.bases import resolve_base
    from adapters.config import load_config
    from adapters.data import load_splits
    from adapters.methods import peft_config
    from adapters.modeling import head_modules, load_config as model_config
    from adapters.quant import plan_device

    cfg = load_config(config)
    splits = load_splits(cfg.data, cfg.task)
    with open(path, "w", encoding="utf-8") as fh:
        for row in splits.train:
            fh.write(json.dumps({"text": row["text"], "label": row["label"]}) + "\n")
    base = resolve_base(cfg.base)
    mconf = model_config(base)
    heads = head_modules(cfg.task, mconf)
    lora = peft_config(cfg, mconf, heads).to_dict()
    lora = {k: sorted(v) if isinstance(v, set) else v for k, v in lora.items()}
    t = cfg.training
    assert plan_device("cpu").compute_dtype == torch.float32
    return {"base_path": base.path, "skip_modules": heads, "peft": json.loads(json.dumps(lora, default=str)),
            "labels": splits.label_names, "rows": len(splits.train), "batch_size": t.batch_size,
            "max_length": cfg.data.max_length, "learning_rate": t.learning_rate, "warmup_ratio": t.warmup_ratio,
            "max_grad_norm": t.max_grad_norm, "seed": t.seed, "quant": cfg.quant}


def plain_hf_trainer(base_path: str, data_path: str, peft: dict, skip_modules: list[str], labels: list[str],
                     batch_size: int, max_length: int, steps: int, learning_rate: float, warmup_ratio: float,
                     max_grad_norm: float, seed: int, sampling: str = "random", **_) -> dict:
    """Child: QLoRA fine-tuning the way a Hugging Face tutorial writes it."""
    import time

    import torch
    from datasets import load_dataset
    from peft import get_peft_config, get_peft_model, prepare_model_for_kbit_training
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig,
                              DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments)

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    data = load_dataset("json", data_files=data_path, split="train")
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=skip_modules)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_path, quantization_config=bnb, dtype=torch.float32, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    # The project trains without gradient checkpointing by default; so does this script.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora_config = get_peft_config(peft)
    model = get_peft_model(model, lora_config)

    collator = DataCollatorWithPadding(tokenizer)
    counted: list[int] = []
    padded: list[int] = []

    def counting_collator(features):  # counts non-pad tokens per batch, in the order batches are made
        batch = collator(features)
        counted.append(int(batch["attention_mask"].sum()))
        padded.append(batch["attention_mask"].numel())
        return batch

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    out = tempfile.mkdtemp(prefix="bench-hf-")
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size, max_steps=steps,
                             learning_rate=learning_rate, warmup_steps=int(warmup_ratio * steps),
                             max_grad_norm=max_grad_norm, seed=seed, report_to="none", save_strategy="no",
                             disable_tqdm=True, train_sampling_strategy=sampling)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=counting_collator,
                      callbacks=[Clock()])
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    n = len(ends)
    assert n == steps and len(counted) >= n, (n, len(counted))
    lengths = sorted(len(x) for x in data["input_ids"])
    return {"steps": n, "tokens_per_s": sum(counted[1:n]) / (ends[-1] - ends[0]),
            "step_s": (ends[-1] - ends[0]) / (n - 1), "non_pad_fraction": sum(counted[:n]) / sum(padded[:n]),
            "train_s": total, "train_rows": len(data),
            "mean_length": sum(lengths) / len(lengths),
            "peft_config": {k: sorted(set(v)) if isinstance(v, (set, list)) else v
                            for k, v in lora_config.to_dict().items()
                            if k in ("r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save")}}


# ------------------------------------------------------------------------------------- driver


def run(quick: bool = False) -> dict:
    steps = 20 if quick else 60
    repeats = 2 if quick else 3
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    data_path = work / "train.jsonl"
    setup = C.in_subprocess("benchmarks.bench_throughput:_export_data",
                            {"config": str(CONFIG), "path": str(data_path)})["result"]
    plain_args = {**setup, "data_path": str(data_path), "steps": steps}
    variants = {
        "ours": ("benchmarks.bench_throughput:_ours", {"config": str(CONFIG), "overrides": _common_overrides(steps)}),
        "plain": ("benchmarks.bench_throughput:plain_hf_trainer", plain_args),
    }
    if os.environ.get("BENCH_THROUGHPUT_GROUPED") == "1":  # costs a third more; off by default
        variants["plain_grouped"] = ("benchmarks.bench_throughput:plain_hf_trainer",
                                     {**plain_args, "sampling": "group_by_length"})
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for rep in range(repeats):  # alternating, so drifts in machine load hit every variant alike
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in order:
            target, kwargs = variants[name]
            r = C.in_subprocess(target, kwargs)
            runs[name].append({**r["result"], "peak_rss_bytes": r["peak_rss_bytes"], "wall_s": r["wall_s"]})
            print(f"  throughput {name} run {rep + 1}/{repeats}: {r['result']['tokens_per_s']:.0f} tok/s, "
                  f"peak RSS {C.mib(r['peak_rss_bytes'])}", flush=True)
    summary = {}
    for name, rs in runs.items():
        summary[name] = {"tokens_per_s": C.median([r["tokens_per_s"] for r in rs]),
                         "non_pad_fraction": C.median([r["non_pad_fraction"] for r in rs]),
                         # all tokens the model computed on, padding included: equal figures mean
                         # equal per-step cost, so the tokens/s gap is the padding saved
                         "padded_tokens_per_s": C.median([r["tokens_per_s"] / r["non_pad_fraction"] for r in rs]),
                         "step_s": C.median([r["step_s"] for r in rs]),
                         "peak_rss_bytes": C.median([r["peak_rss_bytes"] for r in rs]),
                         "wall_s": C.median([r["wall_s"] for r in rs])}
    for name in summary:
        summary[name]["tokens_per_s_vs_plain"] = summary[name]["tokens_per_s"] / summary["plain"]["tokens_per_s"]
        summary[name]["peak_rss_vs_plain"] = summary[name]["peak_rss_bytes"] / summary["plain"]["peak_rss_bytes"]
        summary[name]["padded_tokens_per_s_vs_plain"] = (summary[name]["padded_tokens_per_s"]
                                                         / summary["plain"]["padded_tokens_per_s"])
    speed = summary["ours"]["tokens_per_s_vs_plain"]
    rss = summary["ours"]["peak_rss_vs_plain"]
    results = {
        "quick": quick, "steps": steps, "repeats": repeats,
        "setup": {k: setup[k] for k in ("base_path", "quant", "rows", "batch_size", "max_length", "learning_rate",
                                        "skip_modules")},
        "peft_config": runs["plain"][0]["peft_config"],
        "summary": summary, "runs": runs,
        "goals": {f"tokens/s ours / plain >= {GOAL_SPEEDUP}": {"value": round(speed, 3), "met": speed >= GOAL_SPEEDUP},
                  # 2% slack: RSS of identical runs varies by a few MiB
                  "peak RSS ours <= plain": {"value": round(rss, 3), "met": rss <= 1.02}},
    }
    _print(results)
    path = C.write_json("throughput", results)
    print(f"wrote {path}")
    return results


def _print(r: dict) -> None:
    labels = {"ours": "adapters.train (group_by_length)", "plain": "HF Trainer + peft (default)",
              "plain_grouped": "HF Trainer, group_by_length (info)"}
    rows = [[labels[name], f"{s['tokens_per_s']:,.0f}", C.ratio(s["tokens_per_s_vs_plain"]),
             f"{100 * s['non_pad_fraction']:.0f}%", f"{s['padded_tokens_per_s']:,.0f}",
             C.ratio(s["padded_tokens_per_s_vs_plain"]), f"{s['step_s'] * 1000:,.0f} ms",
             C.mib(s["peak_rss_bytes"]), C.ratio(s["peak_rss_vs_plain"])] for name, s in r["summary"].items()]
    goals = "; ".join(f"goal {k}: {v['value']:.2f} ({'met' if v['met'] else 'MISSED'})" for k, v in r["goals"].items())
    st = r["setup"]
    C.print_table(f"Throughput: MiniLM-L6 {st['quant']} LoRA, {r['steps']} steps x batch {st['batch_size']}, "
                  f"max_length {st['max_length']}, median of {r['repeats']}",
                  ["trainer", "non-pad tok/s", "vs plain", "non-pad", "all tok/s", "vs plain", "step",
                   "peak RSS", "vs plain"], rows,
                  caption=f"{goals}. Threads: {C.THREADS}.")


if __name__ == "__main__":
    run()
