"""Read a trained adapter directory into the parts the runtime serves from one resident base.

A directory written by ``adapters train`` (or any PEFT directory) holds, in one safetensors file:
LoRA matrices (``...lora_A.weight``), a prefix's virtual key/values (``prompt_embeddings``), and for
classifiers the task head (``score``/``classifier``, BERT's ``pooler``). The runtime splits them:
LoRA matrices go into the resident PeftModel, the prefix and the head stay plain tensors that the
engine applies itself, so LoRA and prefix rows can share one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapters.artifact import AdapterMeta, content_name, load_tensors, split_tensors
from adapters.errors import UsageError
from adapters.tasks import TASKS

# Tasks the runtime serves (the registry's ``served``); the others go through ``adapters.load``.
SERVED_TASKS = tuple(name for name, task in TASKS.items() if task.served)


@dataclass
class AdapterFiles:
    """What one adapter directory contributes, already split by where it goes."""

    path: Path
    name: str  # internal peft name, derived from the content so it never collides with peft prefixes
    meta: AdapterMeta
    lora: dict[str, torch.Tensor] = field(default_factory=dict)  # saved peft keys, minus heads
    head: dict[str, torch.Tensor] = field(default_factory=dict)  # "score.weight", "bert.pooler.dense.weight"
    prefix: torch.Tensor | None = None  # [num_virtual_tokens, num_layers * 2 * kv_heads * head_dim]

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def method(self) -> str:  # "lora" | "prefix"
        return self.meta.method

    @property
    def labels(self) -> list[str] | None:
        return self.meta.labels

    @property
    def fingerprint(self) -> str | None:
        return self.meta.fingerprint

    @property
    def peft_config(self) -> dict:
        return self.meta.peft

    @property
    def bytes(self) -> int:
        tensors = [*self.lora.values(), *self.head.values()] + ([self.prefix] if self.prefix is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)


def _strip(key: str) -> str:
    # LoRA saves heads under "base_model.model.<head>", prefix tuning under "base_model.<head>".
    for prefix in ("base_model.model.", "base_model."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def read_adapter_files(path: Path) -> AdapterFiles:
    path = Path(path)
    meta = AdapterMeta.read(path)  # raises UsageError when there is no adapter_config.json
    peft_cfg, method = meta.peft, meta.method
    if method not in ("lora", "prefix"):
        raise UsageError(f"adapter {path} is {peft_cfg.get('peft_type')}; the runtime serves LoRA and prefix "
                         "tuning adapters", "use adapters.load() for other PEFT types")
    if meta.task not in SERVED_TASKS:
        raise UsageError(f"adapter {path} is a {meta.task} adapter; the runtime serves "
                         f"{' and '.join(SERVED_TASKS)}", f"use adapters.load() for {meta.task}")
    if method == "lora" and (peft_cfg.get("use_dora") or peft_cfg.get("alora_invocation_tokens")):
        raise UsageError(f"adapter {path} uses a LoRA variant (DoRA/aLoRA) the runtime does not batch",
                         "use adapters.load() for it")
    if method == "lora" and peft_cfg.get("bias", "none") not in (None, "none"):
        # The slot bank adds x @ A.T @ B.T per row; a trained bias changes the base layer itself,
        # which every row shares, so it cannot be served per row.
        raise UsageError(f"adapter {path} trains biases (LoRA bias={peft_cfg['bias']!r}), which the runtime does not "
                         "serve per row", "use adapters.load() for it, or train it with bias='none'")
    if method == "prefix" and peft_cfg.get("num_transformer_submodules", 1) != 1:
        raise UsageError(f"prefix adapter {path} is for an encoder-decoder model", "use adapters.load()")

    tensors = split_tensors(load_tensors(path))
    files = AdapterFiles(path=path, name=content_name(path), meta=meta, lora=tensors.lora, prefix=tensors.prefix,
                         # modules_to_save copies: the classifier head (and BERT's pooler)
                         head={_strip(k).replace(".modules_to_save.", "."): v for k, v in tensors.modules.items()})
    if method == "prefix" and files.prefix is None:
        raise UsageError(f"prefix adapter {path} has no prompt_embeddings tensor", "re-save it with peft >= 0.5")
    if method == "lora" and not files.lora:
        raise UsageError(f"LoRA adapter {path} has no LoRA weights", "check adapter_model.safetensors")
    in_head = sorted({_strip(k).split(".lora_")[0] for k in files.lora if ".pooler." in k})
    if in_head:
        # The classifier head is replayed from its own copy of the pooler (runtime/heads.py): LoRA
        # on the resident pooler would change an output the head never reads.
        raise UsageError(f"adapter {path} puts LoRA on the pooler ({', '.join(in_head)}), part of the classifier "
                         "head the runtime replays without LoRA", "use adapters.load() for it, or leave the pooler out "
                         "of target_modules")
    if TASKS[files.task].generative and files.head:
        # The LM head is shared by every row; a causal LM adapter that retrained a whole module
        # (modules_to_save) cannot be batched with others without a copy of that module per row.
        raise UsageError(f"causal LM adapter {path} carries full modules ({', '.join(sorted(files.head)[:3])}); "
                         "the runtime batches LoRA matrices and prefixes only", "use adapters.load() for it")
    return files


def prefix_layers(prefix: torch.Tensor, peft_cfg: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (key, value), each [kv_heads, num_virtual_tokens, head_dim].

    Mirrors ``PeftModel.get_prompt``: view as [n, layers*2, heads, head_dim], permute to
    [layers*2, heads, n, head_dim]; entry 2*l is layer l's key, 2*l+1 its value. peft records the
    KV head count (GQA) in ``num_attention_heads`` and ``token_dim = heads * head_dim``."""
    n = peft_cfg["num_virtual_tokens"]
    layers = peft_cfg["num_layers"]
    heads = peft_cfg["num_attention_heads"]
    head_dim = peft_cfg["token_dim"] // heads
    kv = prefix.reshape(n, layers * 2, heads, head_dim).permute(1, 2, 0, 3).contiguous()
    return [(kv[2 * i], kv[2 * i + 1]) for i in range(layers)]
