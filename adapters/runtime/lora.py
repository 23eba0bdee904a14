"""LoRA for mixed batches, the way multi-adapter servers do it (S-LoRA, punica): each targeted
linear layer keeps every resident adapter's matrices, and a forward hook on the layer adds, for
each row, ``x @ A.T @ B.T`` of that row's adapter (the adapter's scaling folded into B). A batch's
rows are grouped by rank bucket, and each group's matrices are gathered once per call (a decode
loop routes every step alike) into one ``[rows, in, r]`` / ``[rows, r, out]`` stack: two batched
matmuls per group and layer, whatever the number of adapters in the batch or resident. peft's own
mixed-batch path loops over the adapters of a batch in every layer and walks every module of the
model on every call, so its cost grows with both.

Memory is what the resident adapters hold and no more: each adapter's matrices are kept in the
engine's compute dtype, padded only to its rank bucket (the next power of two, so adapters of one
bucket stack without copies of other shapes), never to the largest rank resident; they are freed
when the adapter leaves, and a layer's hook goes with its last adapter. Rows with no LoRA on a
layer (the bare base, prefix rows, adapters that leave the layer alone) are simply not in a group.
The bank is the engine's: it is changed and read only under the engine's lock.
"""

from __future__ import annotations

import contextlib
import math
import re

import torch
from torch import nn

LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


class LoraFitError(ValueError):
    """The adapter's LoRA matrices do not fit this base (missing module or other shapes)."""


def _pattern(patterns: dict | None, module: str, default):
    """A per-module override (rank_pattern / alpha_pattern), matched by peft's own rule."""
    from peft.utils.other import get_pattern_key

    if not patterns:
        return default
    return patterns.get(get_pattern_key(list(patterns), module), default)


def lora_matrices(state: dict[str, torch.Tensor], peft_config: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module path -> (A [r, in], B [out, r] times the adapter's scaling), from saved peft keys."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        match = LORA_KEY.match(key)
        if match is None:
            raise LoraFitError(f"unsupported LoRA weight '{key}' (LoRA on embeddings or with a bias)")
        parts.setdefault(match["module"], {})[match["which"]] = tensor
    out = {}
    for module, ab in parts.items():
        if set(ab) != {"A", "B"}:
            raise LoraFitError(f"LoRA weights of '{module}' are incomplete (found {sorted(ab)})")
        a, b = ab["A"].float(), ab["B"].float()
        r = _pattern(peft_config.get("rank_pattern"), module, peft_config.get("r", a.shape[0]))
        alpha = _pattern(peft_config.get("alpha_pattern"), module, peft_config.get("lora_alpha", r))
        scale = alpha / math.sqrt(r) if peft_config.get("use_rslora") else alpha / r
        out[module] = (a, b * scale)
    return out


def rank_bucket(rank: int) -> int:
    """The padded rank an adapter's matrices are kept at: the next power of two (1, 2, 4, 8 ...)."""
    return 1 << max(0, rank - 1).bit_length()


def _features(module: nn.Module) -> tuple[int, int] | None:
    if hasattr(module, "in_features") and hasattr(module, "out_features"):  # Linear, bnb 4/8-bit
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2 style: weight is [in, out]
        return tuple(module.weight.shape)
    return None


# One group of a batch's rows on one layer: the rows (None: every row of the batch) and their
# adapters' matrices stacked, ``[rows, in, r]`` and ``[rows, r, out]``.
Group = tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]


class LayerBank:
    """The LoRA matrices of every resident adapter on one linear layer, and the layer's hook."""

    def __init__(self, bank: LoraBank, module: nn.Module, in_features: int, out_features: int):
        self.bank, self.in_features, self.out_features = bank, in_features, out_features
        # adapter name -> (A.T [in, r], B.T [r, out]), r its rank bucket, in the bank's dtype
        self.matrices: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._hook = module.register_forward_hook(self)
        # The groups gathered for the routing they were gathered for: a decode loop routes every
        # step of a call alike, so each layer gathers once per call, not once per step.
        self._gathered: tuple[tuple[int, int], list[Group]] | None = None

    def put(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        rank = rank_bucket(a.shape[0])
        a_t = torch.zeros(self.in_features, rank, dtype=self.bank.dtype, device=self.bank.device)
        b_t = torch.zeros(rank, self.out_features, dtype=self.bank.dtype, device=self.bank.device)
        a_t[:, : a.shape[0]] = a.T
        b_t[: b.shape[1]] = b.T
        self.matrices[name] = (a_t, b_t)

    def drop(self, name: str) -> None:
        self.matrices.pop(name, None)
        self._gathered = None
        if not self.matrices:
            self._hook.remove()

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.matrices.values())

    def _groups(self, names: tuple[str | None, ...], key: int) -> list[Group]:
        key = (key, self.bank.version)
        if self._gathered is None or self._gathered[0] != key:
            buckets: dict[int, list[int]] = {}
            for row, name in enumerate(names):
                if name in self.matrices:
                    buckets.setdefault(self.matrices[name][0].shape[1], []).append(row)
            groups = []
            for rows in buckets.values():
                index = None if len(rows) == len(names) else torch.tensor(rows, device=self.bank.device)
                groups.append((index, torch.stack([self.matrices[names[r]][0] for r in rows]),
                               torch.stack([self.matrices[names[r]][1] for r in rows])))
            self._gathered = (key, groups)
        return self._gathered[1]

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor):
        route = self.bank.route
        if route is None:
            return None
        x = args[0]
        names, single, key = route
        if single is not None:  # every row on one adapter: plain matmuls
            if single not in self.matrices:
                return None
            a_t, b_t = self.matrices[single]
            return output + ((x.to(a_t.dtype) @ a_t) @ b_t).to(output.dtype)
        if x.shape[0] != len(names):
            raise RuntimeError(f"{type(module).__name__} got {x.shape[0]} rows for {len(names)} routed rows")
        groups = self._groups(names, key)
        if not groups:
            return None
        h = x.to(self.bank.dtype).reshape(x.shape[0], -1, self.in_features)
        if len(groups) == 1 and groups[0][0] is None:
            delta = torch.bmm(torch.bmm(h, groups[0][1]), groups[0][2])
        else:
            delta = h.new_zeros(h.shape[0], h.shape[1], self.out_features)
            for index, a_rows, b_rows in groups:  # several groups: each holds some of the rows
                delta.index_add_(0, index, torch.bmm(torch.bmm(h.index_select(0, index), a_rows), b_rows))
        return output + delta.reshape(*x.shape[:-1], self.out_features).to(output.dtype)


class LoraBank:
    """The LoRA matrices and forward hooks of every resident LoRA adapter, by layer."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32):
        self.device, self.dtype = device, dtype
        self.modules = dict(model.named_modules())
        self.layers: dict[str, LayerBank] = {}
        self._targets: dict[str, list[str]] = {}  # adapter name -> the layers it changes
        self.route: tuple[tuple[str | None, ...], str | None, int] | None = None  # set for one forward pass
        self._last: tuple[tuple[str | None, ...], int] | None = None
        self._routings = 0  # numbers each distinct routing (the layers' gather caches key on it)
        self.version = 0  # bumped by every change to the matrices: a gathered copy is stale after one

    @property
    def names(self) -> set[str]:
        """The resident LoRA adapters."""
        return set(self._targets)

    def _check(self, matrices: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for module, (a, b) in matrices.items():
            target = self.modules.get(module)
            shape = _features(target) if target is not None else None
            if shape is None:
                raise LoraFitError(f"this base has no linear layer '{module}'")
            if (a.shape[1], b.shape[0]) != shape:
                raise LoraFitError(f"'{module}' is {shape[0]}->{shape[1]} here, the adapter's LoRA is "
                                   f"{a.shape[1]}->{b.shape[0]}")

    def cost(self, matrices: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
        """The bytes ``add`` would hold for these matrices (each padded to its rank bucket, in the
        bank's dtype); raises LoraFitError when they do not fit this base."""
        self._check(matrices)
        size = torch.empty(0, dtype=self.dtype).element_size()
        return sum(rank_bucket(a.shape[0]) * (a.shape[1] + b.shape[0]) * size for a, b in matrices.values())

    def add(self, name: str, matrices: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Put ``name``'s matrices in place; raises LoraFitError (and changes nothing) when a
        module is missing or the shapes differ."""
        self._check(matrices)
        for module, (a, b) in matrices.items():
            layer = self.layers.get(module)
            if layer is None:
                layer = self.layers[module] = LayerBank(self, self.modules[module], *_features(self.modules[module]))
            layer.put(name, a, b)
        self.version += 1
        self._targets[name] = list(matrices)

    def remove(self, name: str) -> None:
        """Free ``name``'s matrices; a layer left with none loses its hook."""
        for module in self._targets.pop(name, ()):
            layer = self.layers[module]
            layer.drop(name)
            if not layer.matrices:
                del self.layers[module]
        self.version += 1

    def nbytes(self, name: str | None = None) -> int:
        """The bytes held for ``name`` (every adapter's when None)."""
        if name is None:
            return sum(layer.nbytes for layer in self.layers.values())
        return sum(self.layers[m].matrices[name][0].nbytes + self.layers[m].matrices[name][1].nbytes
                   for m in self._targets.get(name, ()))

    @contextlib.contextmanager
    def routed(self, names: list[str | None]):
        """Route the rows of the forward passes inside to their adapters (None: no LoRA)."""
        missing = [n for n in names if n is not None and n not in self._targets]
        if missing:  # running such a row without its LoRA would answer with the bare base, unannounced
            raise LookupError(f"LoRA adapter(s) {', '.join(sorted(set(missing)))} have no slot in the bank")
        names = tuple(names)
        single = names[0] if len(set(names)) == 1 else None
        if not any(names):  # no LoRA row at all
            yield
            return
        if self._last is None or self._last[0] != names:  # a decode loop reuses one routing
            self._routings += 1
            self._last = (names, self._routings)
        self.route = (names, single, self._last[1])
        try:
            yield
        finally:
            self.route = None
