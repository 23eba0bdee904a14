"""Read a trained adapter directory into the parts the runtime serves from one resident base.

A directory written by ``adapters train`` (or any PEFT directory) holds, in one safetensors file:
LoRA matrices (``...lora_A.weight``), a prefix's virtual key/values (``prompt_embeddings``), and for
classifiers the task head (``score``/``classifier``, BERT's ``pooler``). The runtime splits them:
LoRA matrices go into the resident PeftModel, the prefix and the head stay plain tensors that the
engine applies itself, so LoRA and prefix rows can share one forward pass.

A PEFT directory made elsewhere may use options under which peft computes something else than
these parts give (DoRA, a LoRA bias, LoRA on embeddings, an init that rewrites the base ...): each
is refused here, at load, naming the option, rather than served as a silently other model.
tests/test_third_party_adapters.py holds the matrix of what peft can save and what happens to it.
"""

from __future__ import annotations

import re
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
    # "score.weight", "bert.pooler.dense.weight"; LoRA on the pooler as "bert.pooler.dense.lora_A.weight"
    # and "...lora_B.weight", the adapter's scaling folded into B (merged by runtime/heads.py)
    head: dict[str, torch.Tensor] = field(default_factory=dict)
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


def _strip(key: str) -> str:
    # LoRA saves heads under "base_model.model.<head>", prefix tuning under "base_model.<head>".
    for prefix in ("base_model.model.", "base_model."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


# What peft calls the LoRA variants (the LoraConfig fields it tags ``is_lora_variant``, and the
# ``init_lora_weights`` values that select one), for messages.
_VARIANT_NAMES = {"use_dora": "DoRA", "alora_invocation_tokens": "aLoRA", "velora_config": "VeLoRA",
                  "monteclora_config": "MonteCLoRA", "use_bdlora": "BD-LoRA", "arrow_config": "Arrow",
                  "kasa_config": "KaSA", "mica": "MiCA"}
# Variants whose forward is plain LoRA's (they differ in training only): MiCA freezes B.
_PLAIN_FORWARD_VARIANTS = {"mica"}
# init_lora_weights with which peft rewrites the base's weights every time it loads the adapter:
# PiSSA, OLoRA and CorDA subtract the initial LoRA from them, LoftQ replaces them by a quantized copy.
_BASE_REWRITING_INITS = {"pissa": "PiSSA", "olora": "OLoRA", "corda": "CorDA", "loftq": "LoftQ"}
_PLAIN_LORA_KEY = re.compile(r"\.lora_[AB]\.weight$")


def _lora_variants(peft_cfg: dict) -> list[str]:
    """The LoRA variants ``peft_cfg`` turns on, found the way peft's ``resolve_lora_variant`` finds
    them, so that a variant a later peft adds is refused too, not served as plain LoRA."""
    import dataclasses

    from peft import LoraConfig

    found = []
    tagged = {"use_dora", "alora_invocation_tokens"}  # also for a peft whose fields carry no tags
    for f in dataclasses.fields(LoraConfig):
        if f.name == "init_lora_weights":
            init = peft_cfg.get(f.name)
            if isinstance(init, str) and init in f.metadata.get("lora_variants", ()):
                if init not in _PLAIN_FORWARD_VARIANTS:
                    found.append(f"{_VARIANT_NAMES.get(init, init)} (init_lora_weights={init!r})")
        elif f.metadata.get("is_lora_variant"):
            tagged.add(f.name)
    found += [f"{_VARIANT_NAMES.get(name, name)} ({name})" for name in sorted(tagged) if peft_cfg.get(name)]
    return found


def _refuse_lora_features(path: Path, cfg: dict) -> None:
    """Refuse, naming it, every LoRA option (from adapter_config.json) under which peft computes
    something other than ``W x + scale * B A x`` on the base's own linear layers, the one thing
    the slot bank adds per row (runtime/lora.py)."""
    variants = _lora_variants(cfg)
    if variants:
        raise UsageError(f"adapter {path} uses {', '.join(variants)}, a LoRA variant whose forward the runtime does "
                         "not compute per row", "use adapters.load() for it")
    if cfg.get("bias", "none") not in (None, "none"):
        # A trained bias changes the base layer itself, which every row shares.
        raise UsageError(f"adapter {path} trains biases (LoRA bias={cfg['bias']!r}), which the runtime does not "
                         "serve per row", "use adapters.load() for it, or train it with bias='none'")
    if cfg.get("lora_bias"):
        raise UsageError(f"adapter {path} gives its LoRA B matrices a bias (lora_bias=True), which the runtime "
                         "does not add per row", "use adapters.load() for it, or train it with lora_bias=False")
    init = cfg.get("init_lora_weights")
    rewrites = next((name for key, name in _BASE_REWRITING_INITS.items()
                     if isinstance(init, str) and init.lower().startswith(key)), None)
    if rewrites:
        # Measured: a plainly saved PiSSA adapter served as plain LoRA is off by 0.01-0.1 in every
        # log-probability from what PeftModel.from_pretrained gives on the same base.
        convert = "" if rewrites == "LoftQ" else (
            "save it converted to a plain LoRA (peft's save_pretrained(..., "
            "path_initial_model_for_weight_conversion=DIR)), or ")
        raise UsageError(f"adapter {path} was initialised with {rewrites} (init_lora_weights={init!r}) and saved "
                         f"unconverted: peft rewrites the base's weights for it when it loads it, and the runtime "
                         "shares one base between all rows", f"{convert}use adapters.load() for it")
    if cfg.get("layer_replication"):
        raise UsageError(f"adapter {path} replicates base layers (layer_replication={cfg['layer_replication']}): peft "
                         "builds a deeper model for it than the resident base", "use adapters.load() for it")
    if cfg.get("trainable_token_indices"):
        raise UsageError(f"adapter {path} trains token embeddings (trainable tokens, trainable_token_indices), which "
                         "change the embedding layer every row shares", "use adapters.load() for it")
    odd = [p for p in cfg.get("target_parameters") or [] if not p.endswith(".weight")]
    if odd:
        # LoRA on a linear layer's weight is plain LoRA on that layer; other parameters (fused MoE
        # experts) have no linear layer for the slot bank to hook.
        raise UsageError(f"adapter {path} puts LoRA on parameters other than linear layers' weights "
                         f"(target_parameters: {', '.join(odd)})", "use adapters.load() for it")


def _refuse_lora_tensors(path: Path, files: AdapterFiles) -> None:
    """Refuse, naming them, saved tensors the runtime cannot serve per row: checked on the tensors
    because peft writes some of them without a config option saying so."""
    embedded = sorted({_strip(k).split(".lora_embedding_")[0] for k in files.lora if ".lora_embedding_" in k})
    if embedded:
        raise UsageError(f"adapter {path} puts LoRA on embeddings ({', '.join(embedded)}, lora_embedding_A/B); the "
                         "runtime serves LoRA on linear layers only", "use adapters.load() for it, or leave the "
                         "embedding layers out of target_modules")
    other = sorted(k for k in files.lora if not _PLAIN_LORA_KEY.search(k))
    if other:
        raise UsageError(f"adapter {path} has LoRA tensors the runtime does not serve ({', '.join(other[:3])})",
                         "use adapters.load() for it")
    copies = sorted(k for k in files.head if ".base_layer." in k)
    if copies:
        # peft's save_embedding_layers (default "auto") saves the whole lm_head / embed_tokens when
        # LoRA targets one of them, and loads that copy over the base's (a resized vocabulary).
        raise UsageError(f"adapter {path} carries its own copy of a base layer ({', '.join(copies[:3])}), which peft "
                         "loads over the base's", "if the vocabulary was not resized, save it again with peft's "
                         "save_pretrained(..., save_embedding_layers=False); else use adapters.load() for it")


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
    if method == "lora":
        _refuse_lora_features(path, peft_cfg)
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
    _refuse_lora_tensors(path, files)
    pooler = {k: v for k, v in files.lora.items() if ".pooler." in k}
    if pooler:
        # The classifier head is replayed from its own copy of the pooler (runtime/heads.py), and
        # the resident pooler's output is never read: LoRA on the pooler (all-linear puts it there)
        # goes with the head, which merges it into its copy.
        from adapters.runtime.lora import lora_matrices

        for module, (a, b) in lora_matrices(pooler, peft_cfg).items():
            files.head[f"{module}.lora_A.weight"], files.head[f"{module}.lora_B.weight"] = a, b
        files.lora = {k: v for k, v in files.lora.items() if k not in pooler}
    if TASKS[files.task].generative and files.head:
        # The LM head is shared by every row; a causal LM adapter that retrained a whole module
        # (modules_to_save) cannot be batched with others without a copy of that module per row.
        raise UsageError(f"causal LM adapter {path} carries whole modules (modules_to_save: "
                         f"{', '.join(sorted(files.head)[:3])}); the runtime batches LoRA matrices and prefixes only",
                         "use adapters.load() for it")
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
