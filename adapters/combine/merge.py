"""Merge stored adapters into a new stored adapter: ``adapters merge`` and ``adapters.merge``.

The LoRA arithmetic is peft's own ``add_weighted_adapter`` (linear, cat, svd, ties, dare_linear,
dare_ties); this module makes it safe (parents of one base, method, task and label map, checked
before any work), recorded (the new version's lineage names every parent with its content id and
weight, the method, the density and how the head was combined) and servable (a plain PEFT
directory that ``adapters.load``, the runtime and peft load like any trained adapter).

Two things peft does not do are done here:

- Classifier heads. peft refuses to merge adapters that save the same module (``modules_to_save``),
  which every classification adapter does (its head). The parents' LoRA matrices are merged without
  their heads, and the heads are averaged with the merge weights normalised to sum 1 (so equal
  weights give the plain mean, whatever the LoRA method does with the raw weights).
- Prefix adapters. peft's merge is LoRA-only. A prefix adapter is a tensor of virtual keys/values,
  so prefixes of identical shape are merged as their weighted average (weights normalised to sum 1)
  with method ``linear``; other methods are refused for prefixes.

Nothing reaches the store before the merged directory is complete: it is built in a temporary
directory and stored with one ``Store.put``.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from adapters.artifact import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterMeta,
    build_lineage,
    check_base,
    load_tensors,
    lora_only_config,
    split_tensors,
    write_metadata,
)
from adapters.errors import UsageError

MERGE_METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties")
DENSITY_METHODS = ("ties", "dare_linear", "dare_ties")
DEFAULT_DENSITY = 0.5
# peft's linear/ties/dare weight each parent's A and B by sqrt(weight * scaling): a negative
# weight would be a NaN there, so subtraction (task negation) is only offered where peft does it.
SIGNED_METHODS = ("cat", "svd")
# Ranks must match for these in peft (the merged matrices keep the parents' shape).
SAME_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties")
PREFIX_SHAPE_KEYS = ("num_virtual_tokens", "num_layers", "token_dim", "num_attention_heads",
                     "num_transformer_submodules")
# Internal peft adapter names; never substrings of peft's "lora_" prefix (peft warns about those).
MERGED = "merged_result"


class MergeError(UsageError, ValueError):
    """Adapters that cannot be merged together, or merge options that do not fit them."""


@dataclass
class MergeResult:
    """A stored merge: ``ref`` ("name@3"), ``digest`` (its content id), where it lives, its lineage."""

    ref: str
    digest: str
    name: str
    method: str
    path: Path
    lineage: dict = field(default_factory=dict)


@dataclass
class Parent:
    ref: str  # canonical name@n
    digest: str
    path: Path
    weight: float
    meta: AdapterMeta
    lora: dict = field(default_factory=dict)  # saved LoRA keys -> tensors
    heads: dict = field(default_factory=dict)  # saved head keys (as in the file) -> tensors
    prefix: object = None  # prompt_embeddings tensor


def merge(refs: list[str], *, weights: list[float] | None = None, method: str = "linear",
          density: float | None = None, name: str, store=None, seed: int = 0,
          device: str = "cpu") -> MergeResult:
    """Merge stored adapters ``refs`` into a new version of ``name``; returns a ``MergeResult``.

    ``weights`` defaults to equal weights summing to 1. ``method``: linear, cat, svd, ties,
    dare_linear or dare_ties (LoRA; prefix adapters: linear). ``density`` (ties and dare only,
    default 0.5) is the fraction of each parent's values kept. ``seed`` fixes dare's random drop.
    ``store`` is a ``Store``, a store directory, or None for the default store. ``device``: where
    the base is loaded for peft's arithmetic; by default the CPU, which is plenty for arithmetic on
    adapter-sized matrices and gives the same merge on every machine."""
    from adapters_store import Store, check_name

    check_name(name)
    refs, weights, density = check_options(refs, weights, method, density)
    owned = not isinstance(store, Store)
    s = Store(store) if owned else store
    try:
        parents = [_read_parent(s, ref, w) for ref, w in zip(refs, weights)]
        check_compatible(parents, method)
        with tempfile.TemporaryDirectory(prefix="adapters-merge-") as tmp:
            out = Path(tmp) / "merged"
            out.mkdir()
            if parents[0].meta.method == "lora":
                details = _merge_lora(parents, method, density, seed, device, out)
            else:
                details = _merge_prefix(parents, out)
            lineage = _lineage(parents, method, density, seed, details)
            write_metadata(out, lineage)
            version = s.put(out, name)  # lineage and parent: from the file just written
    finally:
        if owned:
            s.close()
    return MergeResult(ref=version.ref, digest=version.digest, name=name, method=method,
                       path=version.path, lineage=lineage)


def check_options(refs, weights, method, density) -> tuple[list[str], list[float], float | None]:
    """The options alone, before anything is read: counts, methods, weights, density."""
    refs = [str(r) for r in refs]
    if len(refs) < 2:
        raise MergeError(f"a merge needs at least two adapters, got {len(refs)}",
                         "pass two or more refs, e.g. adapters merge a@1 b@2 --name ab")
    if method not in MERGE_METHODS:
        raise MergeError(f"unknown merge method {method!r}", f"use one of {', '.join(MERGE_METHODS)}")
    if weights is None:
        weights = [1.0 / len(refs)] * len(refs)
    weights = [float(w) for w in weights]
    if len(weights) != len(refs):
        raise MergeError(f"{len(weights)} weights for {len(refs)} adapters",
                         "give one weight per adapter, e.g. --weights 0.7,0.3")
    if not all(math.isfinite(w) for w in weights):
        raise MergeError(f"weights must be finite numbers, got {weights}", "e.g. --weights 0.5,0.5")
    if method not in SIGNED_METHODS and any(w < 0 for w in weights):
        raise MergeError(f"method {method} takes no negative weights (peft scales by their square root)",
                         f"use --method {' or '.join(SIGNED_METHODS)} to subtract an adapter")
    if sum(weights) <= 0:
        raise MergeError(f"the weights {weights} sum to {sum(weights):g}; they must sum to more than 0",
                         "heads and prefixes are averaged with the weights normalised to sum 1")
    if method in DENSITY_METHODS:
        density = DEFAULT_DENSITY if density is None else float(density)
        if not 0 < density <= 1:
            raise MergeError(f"density must be in (0, 1], got {density}", "e.g. --density 0.5")
    elif density is not None:
        raise MergeError(f"--density applies to {', '.join(DENSITY_METHODS)}, not to {method}",
                         f"drop --density, or use --method {DENSITY_METHODS[0]}")
    return refs, weights, density


def _read_parent(s, ref: str, weight: float) -> Parent:
    version = s.check(ref)  # re-hashes the files: a corrupted parent is refused, named
    meta = AdapterMeta.read(version.path)
    if meta.method not in ("lora", "prefix"):
        raise MergeError(f"{version.ref} is a {meta.peft.get('peft_type')} adapter; merges take LoRA or prefix "
                         "adapters", "merge LoRA adapters (any method) or prefix adapters (linear)")
    tensors = split_tensors(load_tensors(version.path))
    # modules_to_save copies (the task head, BERT's pooler) are the heads averaged below.
    return Parent(version.ref, version.digest, version.path, weight, meta, lora=tensors.lora,
                  heads=tensors.modules, prefix=tensors.prefix)


def check_compatible(parents: list[Parent], method: str) -> None:
    """Refuse, naming both refs, parents that do not share base, quantization, method, task,
    labels and head; and LoRA options that peft cannot merge with ``method``."""
    first = parents[0]

    def differ(what: str, a, b, other: Parent, hint: str) -> MergeError:
        return MergeError(f"cannot merge adapters with different {what}: {first.ref} has {a}, "
                          f"{other.ref} has {b}", hint)

    for p in parents[1:]:
        a, b = first.meta, p.meta
        same_base = (a.fingerprint == b.fingerprint) if a.fingerprint and b.fingerprint \
            else a.base == b.base
        if not same_base:
            raise differ("bases", a.base_text(), b.base_text(), p, "merge adapters trained on the same base")
        if first.meta.method != p.meta.method:
            raise differ("methods", first.meta.method, p.meta.method, p,
                         "LoRA adapters merge with LoRA adapters, prefix adapters with prefix adapters")
        if a.task != b.task:
            raise differ("tasks", a.task, b.task, p, "merge adapters of one task")
        if (a.labels or None) != (b.labels or None):
            raise differ("label maps", a.labels, b.labels, p,
                         "task heads are averaged row by row, so the labels must be the same, in the same order")
        if (a.quant or "none") != (b.quant or "none"):
            raise differ("base quantizations", a.quant, b.quant, p,
                         "each adapter learned corrections for the base as quantized; "
                         "merge adapters of one quantization")
        if _shapes(first.heads) != _shapes(p.heads):
            raise differ("task heads", sorted(_shapes(first.heads)) or "none", sorted(_shapes(p.heads)) or "none",
                         p, "merge adapters whose heads are the same modules of the same shapes")
    if first.meta.method == "prefix":
        if method != "linear":
            raise MergeError(f"prefix adapters merge with --method linear only, not {method}",
                             "prefixes are averaged; the LoRA methods (cat, svd, ties, dare) need LoRA matrices")
        shapes = [tuple(p.meta.peft.get(k) for k in PREFIX_SHAPE_KEYS) for p in parents]
        for p, shape in zip(parents[1:], shapes[1:]):
            if shape != shapes[0] or tuple(p.prefix.shape) != tuple(first.prefix.shape):
                raise differ("prefix shapes", dict(zip(PREFIX_SHAPE_KEYS, shapes[0])),
                             dict(zip(PREFIX_SHAPE_KEYS, shape)), p,
                             "prefixes are averaged, so they need the same virtual tokens, layers and heads")
        return
    for p in parents:
        cfg = p.meta.peft
        if cfg.get("use_dora") or cfg.get("target_parameters"):
            raise MergeError(f"{p.ref} is a DoRA / parameter-targeting LoRA, which peft cannot merge",
                             "merge plain LoRA adapters")
    ranks = {p.ref: _max_rank(p.meta.peft) for p in parents}
    if method in SAME_RANK_METHODS and len(set(ranks.values())) > 1:
        raise MergeError(f"method {method} needs adapters of one LoRA rank; the ranks are {ranks}",
                         "use --method cat or svd, which merge adapters of different ranks")
    kinds = {p.ref: isinstance(p.meta.peft.get("target_modules"), str) for p in parents}
    if len(set(kinds.values())) > 1:
        raise MergeError("cannot merge adapters whose target_modules are a regex in some and a list in others",
                         "train the adapters with target_modules of the same form")


def _shapes(tensors: dict) -> dict:
    return {k: tuple(v.shape) for k, v in tensors.items()}


def _max_rank(cfg: dict) -> int:
    pattern = cfg.get("rank_pattern") or {}
    return max([int(cfg.get("r") or 8), *[int(r) for r in pattern.values()]])


def normalised(parents: list[Parent]) -> list[float]:
    total = sum(p.weight for p in parents)
    return [p.weight / total for p in parents]


def average(tensors: list, weights: list[float]):
    """Weighted sum in float32, cast back to the first tensor's dtype."""
    import torch

    first = tensors[0]
    if not first.is_floating_point():
        return first.clone()
    acc = torch.zeros(first.shape, dtype=torch.float32)
    for t, w in zip(tensors, weights):
        acc += float(w) * t.to(torch.float32)
    return acc.to(first.dtype).contiguous()


def _merged_heads(parents: list[Parent]) -> tuple[dict, dict | None]:
    if not parents[0].heads:
        return {}, None
    weights = normalised(parents)
    heads = {key: average([p.heads[key] for p in parents], weights) for key in parents[0].heads}
    modules = sorted({k.removeprefix("base_model.model.").removeprefix("base_model.").rsplit(".", 1)[0]
                      for k in heads})
    return heads, {"combination": "weighted average", "weights": [round(w, 8) for w in weights],
                   "modules": modules}


def _merge_lora(parents: list[Parent], method: str, density: float | None, seed: int, device: str,
                out: Path) -> dict:
    """peft's ``add_weighted_adapter`` over the parents' LoRA matrices (heads apart, see above)."""
    import copy

    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import save_file

    from adapters.base.quiet import quiet_loading

    model = _load_base(parents[0], device)
    names = [f"merge_in_{i}" for i in range(len(parents))]
    peft = None
    with quiet_loading():
        for name, p in zip(names, parents):
            # No heads (peft refuses to merge modules_to_save) and no task wrappers around the base.
            config = lora_only_config(p.meta.peft)
            if peft is None:
                peft = get_peft_model(model, config, adapter_name=name)
            else:
                peft.add_adapter(name, config)
            loaded = set_peft_model_state_dict(peft, p.lora, adapter_name=name)
            missing = [k for k in loaded.missing_keys if f".{name}." in k]
            unexpected = [k for k in loaded.unexpected_keys if ".lora_" in k]
            if missing or unexpected:
                raise MergeError(f"{p.ref} does not fit its recorded base ({len(missing)} missing, "
                                 f"{len(unexpected)} unexpected LoRA weights)", "check the adapter's base")
        # dare drops values at random: a fixed seed makes a merge reproducible from its lineage
        # (in a forked RNG state, so the caller's random stream is left as it was).
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            try:
                peft.add_weighted_adapter(names, [p.weight for p in parents], MERGED, combination_type=method,
                                          density=density)
            except ValueError as exc:
                raise MergeError(f"peft cannot merge these adapters with {method}: {exc}",
                                 "try --method cat or svd") from None
    state = get_peft_model_state_dict(peft, adapter_name=MERGED)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    heads, head_info = _merged_heads(parents)
    tensors.update(heads)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})

    config = copy.deepcopy(peft.peft_config[MERGED])
    first = parents[0].meta.peft
    config.modules_to_save = first.get("modules_to_save")
    config.exclude_modules = first.get("exclude_modules")
    config.task_type = first.get("task_type")
    config.base_model_name_or_path = first.get("base_model_name_or_path")
    config.revision = first.get("revision")
    config.inference_mode = True
    config.save_pretrained(str(out))
    written = json.loads((out / CONFIG_FILE).read_text())
    return {"head": head_info, "method_config": {"r": written.get("r"), "alpha": written.get("lora_alpha"),
                                                 "target_modules": written.get("target_modules")}}


def _load_base(parent: Parent, device: str):
    """The parents' base, quantized as they were trained (peft's merge runs on its LoRA layers)."""
    from adapters.base.device import plan_device
    from adapters.base.loading import load_base_model
    from adapters.base.resolve import resolve_base, weights_fingerprint

    meta = parent.meta
    if not meta.base:
        raise MergeError(f"{parent.ref} does not record its base model", "store it with its lineage")
    resolved = resolve_base(meta.base)
    check_base(meta, weights_fingerprint(resolved.path), meta.base, shown=parent.ref,
               hint="merge on the machine that has the adapter's base")
    model, _ = load_base_model(resolved, meta.task, meta.quant or "none", plan_device(device),
                               meta.labels)
    model.eval()
    return model


def _merge_prefix(parents: list[Parent], out: Path) -> dict:
    """The weighted average of the parents' virtual keys/values (and heads)."""
    from safetensors.torch import save_file

    weights = normalised(parents)
    tensors = {"prompt_embeddings": average([p.prefix for p in parents], weights)}
    heads, head_info = _merged_heads(parents)
    tensors.update(heads)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config = dict(parents[0].meta.peft)
    # The stored prompt_embeddings are the final keys/values (peft saves a projection's output),
    # so the merged prefix is a plain embedding: no projection to rebuild on load.
    config.update(prefix_projection=False, inference_mode=True)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return {"head": head_info, "prefix_weights": [round(w, 8) for w in weights],
            "method_config": {k: config.get(k) for k in ("num_virtual_tokens",)}}


def _lineage(parents: list[Parent], method: str, density: float | None, seed: int, details: dict) -> dict:
    first = parents[0].meta
    record = {"method": method, "density": density,
              "parents": [{"ref": p.ref, "digest": p.digest, "weight": p.weight} for p in parents]}
    if method.startswith("dare"):
        record["seed"] = seed
    if first.method == "lora":
        record["arithmetic"] = "peft add_weighted_adapter"
    else:
        record["arithmetic"] = "weighted average of the prefixes' virtual keys/values"
        record["prefix_weights"] = details["prefix_weights"]
    if details["head"]:
        record["head"] = details["head"]
    base = first.lineage.get("base") or {"id": first.base, "fingerprint": first.fingerprint}
    return build_lineage(base=base, quant=first.quant, method=first.method, method_config=details["method_config"],
                         task=first.task, labels=first.labels, parent=parents[0].ref, merge=record)
