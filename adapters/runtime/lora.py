"""LoRA for mixed batches, the way multi-adapter servers do it (S-LoRA, punica): every resident
adapter gets a slot, and each targeted linear layer keeps the LoRA matrices of all slots stacked,
``A [slots, r, in]`` and ``B [slots, out, r]`` (the adapter's scaling folded into B, ranks padded
with zeros). A forward hook on the layer adds, for each row, ``x @ A[slot].T @ B[slot].T``: one
gather and two batched matmuls per layer, whatever the number of distinct adapters in the batch
or resident in the engine. peft's own mixed-batch path loops over the adapters of a batch in every
layer and walks every module of the model on every call, so its cost grows with both.

Slot 0 holds zeros: ``__base__`` rows, prefix rows and adapters that leave a layer alone use it.
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


def _features(module: nn.Module) -> tuple[int, int] | None:
    if hasattr(module, "in_features") and hasattr(module, "out_features"):  # Linear, bnb 4/8-bit
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2 style: weight is [in, out]
        return tuple(module.weight.shape)
    return None


class LayerBank:
    """The stacked LoRA matrices of one linear layer, one slot per resident adapter."""

    def __init__(self, bank: LoraBank, in_features: int, out_features: int):
        self.bank, self.in_features, self.out_features = bank, in_features, out_features
        self.a = torch.zeros(0, 0, in_features, device=bank.device)
        self.b = torch.zeros(0, out_features, 0, device=bank.device)
        # The rows' gathered matrices for the routing they were gathered for: a decode loop routes
        # every step of a call alike, so each layer gathers once per call, not once per step.
        self._gathered: tuple[tuple[int, int], torch.Tensor, torch.Tensor] | None = None

    def put(self, slot: int, a: torch.Tensor, b: torch.Tensor) -> None:
        slots = self.a.shape[0] if slot < self.a.shape[0] else max(slot + 1, 2 * self.a.shape[0], 4)
        rank = max(self.a.shape[1], a.shape[0])
        if (slots, rank) != self.a.shape[:2]:  # grow (doubling), or a higher rank (zero padded)
            grown_a = torch.zeros(slots, rank, self.in_features, device=self.bank.device)
            grown_b = torch.zeros(slots, self.out_features, rank, device=self.bank.device)
            grown_a[: self.a.shape[0], : self.a.shape[1]] = self.a
            grown_b[: self.b.shape[0], :, : self.b.shape[2]] = self.b
            self.a, self.b = grown_a, grown_b
        self.a[slot].zero_()
        self.b[slot].zero_()
        self.a[slot, : a.shape[0]] = a.to(self.bank.device)
        self.b[slot, :, : b.shape[1]] = b.to(self.bank.device)

    def clear(self, slot: int) -> None:
        if slot < self.a.shape[0]:
            self.a[slot].zero_()
            self.b[slot].zero_()

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor):
        route = self.bank.route
        if route is None or self.a.shape[0] == 0:
            return None
        x = args[0]
        slots, single, key = route
        if single is not None:  # every row on one adapter: plain matmuls
            if single >= self.a.shape[0]:
                return None
            delta = (x.to(self.a.dtype) @ self.a[single].T) @ self.b[single].T
        else:
            if x.shape[0] != slots.shape[0]:
                raise RuntimeError(f"{type(module).__name__} got {x.shape[0]} rows for {slots.shape[0]} routed rows")
            key = (key, self.bank.version)
            if self._gathered is None or self._gathered[0] != key:
                rows = torch.where(slots < self.a.shape[0], slots, 0)  # slots added after this layer's last growth
                self._gathered = (key, self.a[rows].transpose(1, 2), self.b[rows].transpose(1, 2))
            _, a_rows, b_rows = self._gathered
            h = x.to(self.a.dtype).reshape(x.shape[0], -1, self.in_features)
            delta = torch.bmm(torch.bmm(h, a_rows), b_rows)
            delta = delta.reshape(*x.shape[:-1], self.out_features)
        return output + delta.to(output.dtype)


class LoraBank:
    """Slots, per-layer stacks and the forward hooks of every resident LoRA adapter."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.device = device
        self.modules = dict(model.named_modules())
        self.layers: dict[str, LayerBank] = {}
        self.slots: dict[str, int] = {}  # adapter name -> slot (>= 1)
        self._targets: dict[str, list[str]] = {}  # adapter name -> the layers it changes
        self._free: list[int] = []
        self.route: tuple[torch.Tensor, int | None, int] | None = None  # set for one forward pass
        self._last_slots: tuple[list[int], torch.Tensor, int] | None = None
        self._routings = 0  # numbers each distinct routing (the layers' gather caches key on it)
        self.version = 0  # bumped by every change to the stacks: a gathered copy is stale after one

    def add(self, name: str, matrices: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Give ``name`` a slot and put its matrices in place; raises LoraFitError (and changes
        nothing) when a module is missing or the shapes differ."""
        for module, (a, b) in matrices.items():
            target = self.modules.get(module)
            shape = _features(target) if target is not None else None
            if shape is None:
                raise LoraFitError(f"this base has no linear layer '{module}'")
            if (a.shape[1], b.shape[0]) != shape:
                raise LoraFitError(f"'{module}' is {shape[0]}->{shape[1]} here, the adapter's LoRA is "
                                   f"{a.shape[1]}->{b.shape[0]}")
        slot = self._free.pop() if self._free else len(self.slots) + 1
        for module, (a, b) in matrices.items():
            layer = self.layers.get(module)
            if layer is None:
                layer = self.layers[module] = LayerBank(self, *_features(self.modules[module]))
                self.modules[module].register_forward_hook(layer)
            layer.put(slot, a, b)
        self.version += 1
        self.slots[name] = slot
        self._targets[name] = list(matrices)

    def remove(self, name: str) -> None:
        slot = self.slots.pop(name, None)
        if slot is None:
            return
        for module in self._targets.pop(name):
            self.layers[module].clear(slot)
        self.version += 1
        self._free.append(slot)

    @contextlib.contextmanager
    def routed(self, names: list[str | None]):
        """Route the rows of the forward passes inside to their adapters (None: no LoRA)."""
        missing = [n for n in names if n is not None and n not in self.slots]
        if missing:  # routing such a row to slot 0 would answer with the bare base, unannounced
            raise LookupError(f"LoRA adapter(s) {', '.join(sorted(set(missing)))} have no slot in the bank")
        slots = [self.slots[n] if n is not None else 0 for n in names]
        single = slots[0] if len(set(slots)) == 1 else None
        if single == 0 or not self.slots:  # no LoRA row at all
            yield
            return
        if self._last_slots is None or self._last_slots[0] != slots:  # a decode loop reuses one routing
            self._routings += 1
            self._last_slots = (slots, torch.tensor(slots, device=self.device), self._routings)
        self.route = (self._last_slots[1], single, self._last_slots[2])
        try:
            yield
        finally:
            self.route = None
