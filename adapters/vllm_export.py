"""The vLLM command line that serves an exported LoRA adapter: ``adapters export --format vllm``.

vLLM loads LoRA adapters only (no prefix tuning), and from the hub model the base was made from,
not from this project's local copy of a built-in base. No torch here."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.tasks import method_for_peft_type

# The ranks vLLM accepts for --max-lora-rank; its default, 16, covers smaller adapters.
VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def check_servable(ref: str, method: str | None, config: dict[str, Any]) -> None:
    """Refuse, before anything is exported, an adapter vLLM cannot serve."""
    from adapters_store import StoreError

    if method_for_peft_type(config.get("peft_type")) != "lora":
        raise StoreError(f"{ref} is a {config.get('peft_type') or method} adapter; vLLM "
                         "serves LoRA adapters only", hint="use --format peft for other methods")
    # vLLM's own load checks (vllm/lora/peft_helper.py), so what is written is what vLLM loads.
    problems = []
    if config.get("modules_to_save"):
        problems.append(f"it saves whole modules ({', '.join(map(str, config['modules_to_save']))}: a task "
                        "head), and vLLM loads only adapters whose modules_to_save is empty")
    if config.get("use_dora"):
        problems.append("it is a DoRA adapter, which vLLM does not load")
    if config.get("bias", "none") not in (None, "none"):
        problems.append(f"it trains biases (bias={config['bias']!r}), which vLLM does not load")
    ranks = [int(config.get("r") or 8), *[int(r) for r in (config.get("rank_pattern") or {}).values()]]
    if max(ranks) > VLLM_RANKS[-1]:
        problems.append(f"its rank {max(ranks)} is above vLLM's largest --max-lora-rank, {VLLM_RANKS[-1]}")
    if problems:
        raise StoreError(f"{ref} cannot be served by vLLM: " + "; ".join(problems),
                         hint="export it with --format peft (for adapters serve or plain peft), or train a "
                         "causal-LM LoRA adapter for vLLM")


@dataclass
class VllmCommand:
    base: str  # the model vLLM loads
    module: str  # NAME=PATH, the value of --lora-modules
    max_lora_rank: int | None = None  # only where the adapter's rank is above vLLM's default
    notes: list[str] = field(default_factory=list)  # what vLLM does differently, for people

    @property
    def lora_modules(self) -> str:
        return f"--lora-modules {shlex.quote(self.module)}"

    @property
    def command(self) -> str:
        rank = f" --max-lora-rank {self.max_lora_rank}" if self.max_lora_rank else ""
        return f"vllm serve {shlex.quote(self.base)} --enable-lora {self.lora_modules}{rank}"


def vllm_command(ref: str, stored_base: str | None, config: dict[str, Any], path: Path,
                 lora_name: str) -> VllmCommand:
    """The command that serves the adapter exported to ``path`` (its adapter_config.json is
    ``config``) under ``lora_name``."""
    from adapters.base.resolve import BUILTIN_BASES

    notes = []
    builtin = BUILTIN_BASES.get(stored_base or "")
    # A built-in base's own files are a local (and for SmolLM2 a dequantized GGUF) copy that
    # vLLM cannot load by name: it gets the hub model the copy was made from.
    if builtin:
        base = builtin.hub_id
        notes.append(f"{ref} was trained on the built-in base {builtin.name}, made from "
                     f"{builtin.hub_id}; vLLM loads that model from the hub")
    else:
        base = config.get("base_model_name_or_path") or stored_base or "BASE_MODEL"
    rank = int(config.get("r") or 0)
    max_rank = next((r for r in VLLM_RANKS if r >= rank), rank) if rank > 16 else None
    if config.get("modules_to_save"):
        notes.append(f"modules_to_save {config['modules_to_save']} (e.g. a classifier head) are not "
                     "applied by vLLM")
    return VllmCommand(base=base, module=f"{lora_name}={path}", max_lora_rank=max_rank, notes=notes)
