"""``adapters export REF DIR --merged``: the base with a LoRA adapter merged in, as a full model
directory that plain ``transformers`` loads (``AutoModelFor....from_pretrained(DIR)``), no peft.

Precision: the merge always happens in float32 on the CPU. An adapter trained on a 4-bit base is
loaded onto that base quantized the same way (the weights it learned its corrections for), the base
is dequantized to float32, and only then is the LoRA delta added. Merging into the 4-bit weights
themselves (what peft's ``merge_and_unload`` does on a bitsandbytes layer) would round the sum back
to 16 levels per block and lose most of a small delta. So the export is float32 and larger than the
4-bit base in memory; what it computes matches base + adapter up to float32 rounding.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from adapters.artifact import AdapterMeta, adapter_dir, check_base
from adapters.errors import UsageError


@dataclass
class MergedExport:
    path: Path
    adapter: str  # the ref or directory asked for
    base: str
    task: str
    quant: str  # how the base was loaded before merging ("4bit", "8bit", "none")
    dequantized: bool  # True: the quantized base was dequantized to float32 first
    dtype: str = "float32"
    notes: list[str] = field(default_factory=list)


def export_merged(adapter: str | Path, dest: str | Path, *, store_root: str | Path | None = None,
                  base: str | None = None) -> MergedExport:
    """Merge ``adapter`` (a store ref or an adapter directory) into its base and save the full model
    (weights, config with labels, tokenizer) to ``dest``, a new or empty directory."""

    dest = Path(dest).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} exists and is not an empty directory", "pick a new path or empty it first")
    directory = adapter_dir(adapter, store_root)  # store refs are re-hashed before use
    meta = AdapterMeta.read(directory)
    if meta.method != "lora":
        raise UsageError(f"{adapter} is a {meta.method or 'non-LoRA'} adapter; only LoRA adapters merge into the "
                         "base's weights (a prefix adds virtual tokens, not a weight change)",
                         "export it as a PEFT directory: adapters export REF DIR (without --merged)")
    if meta.peft.get("use_dora"):
        raise UsageError(f"{adapter} is a DoRA adapter, which this export does not merge",
                         "export it as a PEFT directory instead")
    quant = meta.quant or "none"
    model, tokenizer, resolved = _merged_model(directory, meta, quant, base)
    notes = []
    if quant != "none":
        notes.append(f"the base was loaded {quant} (as the adapter was trained), dequantized to float32, and the "
                     "adapter merged in float32: never into the quantized weights")
    _save(model, tokenizer, dest, {
        "adapter": str(adapter), "adapter_dir": str(directory), "base": resolved.id,
        "base_fingerprint": meta.fingerprint, "quant_before_merge": quant,
        "dequantized": quant != "none", "dtype": "float32", "task": meta.task, "labels": meta.labels})
    return MergedExport(dest.resolve(), str(adapter), resolved.id, meta.task, quant, quant != "none",
                        notes=notes)


def _merged_model(directory: Path, meta: AdapterMeta, quant: str, base: str | None):
    import torch
    from peft import PeftModel

    from adapters.base.device import DevicePlan
    from adapters.base.loading import load_base_model, load_tokenizer
    from adapters.base.quiet import quiet_loading
    from adapters.base.resolve import resolve_base, weights_fingerprint

    name = base or meta.base
    if not name:
        raise UsageError(f"{directory} does not record its base model", "pass the base with --base")
    resolved = resolve_base(name)
    check_base(meta, weights_fingerprint(resolved.path), name, hint="export it with its own base")
    # float32 on the CPU whatever the machine: the merged weights are what gets saved.
    plan = DevicePlan("cpu", torch.float32)
    tokenizer = load_tokenizer(resolved, meta.task)
    model, _ = load_base_model(resolved, meta.task, quant, plan, meta.labels,
                               pad_token_id=tokenizer.pad_token_id)
    if quant != "none":
        with quiet_loading():
            model = model.dequantize(dtype=torch.float32)
        _forget_quantization(model)
    with quiet_loading():
        peft_model = PeftModel.from_pretrained(model, str(directory))
        merged = peft_model.merge_and_unload()
    merged.eval()
    return merged, tokenizer, resolved


def _forget_quantization(model) -> None:
    """After dequantizing, nothing may still mark the model as quantized: peft would pick its
    bitsandbytes code paths and transformers would write a quantization_config on save."""
    for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
        if attr in vars(model):
            setattr(model, attr, False)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _save(model, tokenizer, dest: Path, provenance: dict) -> None:
    """Write to a staging dir beside ``dest`` and rename it into place: no half-written export."""
    from adapters.base.quiet import quiet_loading

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with quiet_loading():
            model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "adapters_export.json").write_text(json.dumps(provenance, indent=2, default=str))
        if dest.exists():
            dest.rmdir()  # checked empty above
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
