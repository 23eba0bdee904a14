"""Read a trained adapter directory into the parts the runtime serves from one resident base.

A directory written by ``adapters train`` (or any PEFT directory) holds, in one safetensors file:
LoRA matrices (``...lora_A.weight``), a prefix's virtual key/values (``prompt_embeddings``), and for
classifiers the task head (``score``/``classifier``, BERT's ``pooler``). The runtime splits them:
LoRA matrices go into the resident PeftModel, the prefix and the head stay plain tensors that the
engine applies itself, so LoRA and prefix rows can share one forward pass.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapters.errors import UsageError
from adapters.inference import check_weights, read_adapter_metadata

# Tasks the runtime serves; token classification still goes through ``adapters.load``.
SERVED_TASKS = ("causal-lm", "classification")


@dataclass
class AdapterFiles:
    """What one adapter directory contributes, already split by where it goes."""

    path: Path
    name: str  # internal peft name, derived from the content so it never collides with peft prefixes
    task: str
    method: str  # "lora" | "prefix"
    labels: list[str] | None
    fingerprint: str | None
    peft_config: dict
    lora: dict[str, torch.Tensor] = field(default_factory=dict)  # saved peft keys, minus heads
    head: dict[str, torch.Tensor] = field(default_factory=dict)  # "score.weight", "bert.pooler.dense.weight"
    prefix: torch.Tensor | None = None  # [num_virtual_tokens, num_layers * 2 * kv_heads * head_dim]

    @property
    def bytes(self) -> int:
        tensors = [*self.lora.values(), *self.head.values()] + ([self.prefix] if self.prefix is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)


def content_name(path: Path) -> str:
    """``a_`` + 16 hex of the config and weights: equal content shares one resident copy, and
    the name can never be a substring of a peft prefix such as ``lora_`` (a peft warning trap)."""
    digest = hashlib.sha256()
    for fname in ("adapter_config.json", "adapter_model.safetensors", "adapter_manager.json"):
        f = path / fname
        if f.is_file():
            digest.update(fname.encode())
            digest.update(f.read_bytes())
    return "a_" + digest.hexdigest()[:16]


def _strip(key: str) -> str:
    # LoRA saves heads under "base_model.model.<head>", prefix tuning under "base_model.<head>".
    for prefix in ("base_model.model.", "base_model."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def read_adapter_files(path: Path) -> AdapterFiles:
    path = Path(path)
    meta = read_adapter_metadata(path)  # raises UsageError when there is no adapter_config.json
    peft_cfg = meta["peft"]
    peft_type = peft_cfg.get("peft_type")
    method = {"LORA": "lora", "PREFIX_TUNING": "prefix"}.get(peft_type)
    if method is None:
        raise UsageError(f"adapter {path} is {peft_type}; the runtime serves LoRA and prefix tuning adapters",
                         "use adapters.load() for other PEFT types")
    if meta["task"] not in SERVED_TASKS:
        raise UsageError(f"adapter {path} is a {meta['task']} adapter; the runtime serves "
                         f"{' and '.join(SERVED_TASKS)}", "use adapters.load() for token classification")
    if method == "lora" and (peft_cfg.get("use_dora") or peft_cfg.get("alora_invocation_tokens")):
        raise UsageError(f"adapter {path} uses a LoRA variant (DoRA/aLoRA) the runtime does not batch",
                         "use adapters.load() for it")
    if method == "prefix" and peft_cfg.get("num_transformer_submodules", 1) != 1:
        raise UsageError(f"prefix adapter {path} is for an encoder-decoder model", "use adapters.load()")

    state = _load_state(path)
    files = AdapterFiles(path=path, name=content_name(path), task=meta["task"], method=method,
                         labels=meta["labels"], fingerprint=meta["fingerprint"], peft_config=peft_cfg)
    for key, tensor in state.items():
        if key == "prompt_embeddings":
            files.prefix = tensor
        elif ".lora_" in key:
            files.lora[key] = tensor
        else:
            # Anything else is a modules_to_save copy: the classifier head (and BERT's pooler).
            files.head[_strip(key).replace(".modules_to_save.", ".")] = tensor
    if method == "prefix" and files.prefix is None:
        raise UsageError(f"prefix adapter {path} has no prompt_embeddings tensor", "re-save it with peft >= 0.5")
    if method == "lora" and not files.lora:
        raise UsageError(f"LoRA adapter {path} has no LoRA weights", "check adapter_model.safetensors")
    if files.task == "causal-lm" and files.head:
        # The LM head is shared by every row; a causal LM adapter that retrained a whole module
        # (modules_to_save) cannot be batched with others without a copy of that module per row.
        raise UsageError(f"causal LM adapter {path} carries full modules ({', '.join(sorted(files.head)[:3])}); "
                         "the runtime batches LoRA matrices and prefixes only", "use adapters.load() for it")
    return files


def lora_only_config(peft_config: dict):
    """A ``LoraConfig`` for an adapter's LoRA matrices alone: no heads (``modules_to_save``), no
    task type, inference mode. peft never puts LoRA on a module it saves whole, so with the heads
    dropped those modules are excluded explicitly: a target such as ``dense`` would otherwise also
    reach BERT's ``pooler.dense`` (part of the head) and expect LoRA weights the adapter never had."""
    from peft import LoraConfig

    fields = {k: v for k, v in peft_config.items() if k in LoraConfig.__dataclass_fields__}
    heads = fields.get("modules_to_save") or []
    fields.update(modules_to_save=None, task_type=None, inference_mode=True)
    if heads:
        # The pattern peft itself uses for modules_to_save (any module path at or under a head).
        patterns = [rf"(^|.*\.)({'|'.join(re.escape(h) for h in heads)})($|\..*)"]
        own = fields.get("exclude_modules")
        if isinstance(own, str):
            patterns.append(own)
        elif own:  # a list: exact names or name suffixes, as peft matches them
            patterns.append(rf"(^|.*\.)({'|'.join(re.escape(m) for m in own)})")
        fields["exclude_modules"] = "|".join(f"(?:{p})" for p in patterns)
    return LoraConfig(**fields)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = check_weights(path)  # safetensors only: a pickle-only folder is refused, never unpickled
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"cannot read {weights}: {exc}",
                         "the file is damaged: re-save the adapter, or take it from the store again") from None


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
