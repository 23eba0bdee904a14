"""Per-row prefix key/values: rows with different prefix adapters (or none) in one forward pass.

peft applies a prefix adapter by pre-filling the KV cache with the adapter's virtual key/values and
prepending ones to the attention mask; the model then gives the real tokens positions
``n_virtual, n_virtual + 1, ...`` (Llama and BERT: from the cache's length).
peft can do this for one adapter per model call only. Here each row gets its own prefix:

    cache[layer]   [batch, kv_heads, P, head_dim]  row i's prefix right-aligned in the last n_i slots
    attention mask [batch, P + T]                  zeros over the P - n_i unused slots, then tokens' mask
    position ids   [batch, T]                      n_i + (index among the row's real tokens)

with P the longest prefix in the batch. Masked slots get no attention weight (softmax of -inf is 0),
so row i computes exactly what peft computes for adapter i alone; LoRA and base rows are rows with
n_i = 0. Explicit position ids keep that true under left padding too.
"""

from __future__ import annotations

import functools
import inspect

import torch


def batch_prefix(prefixes: list[list[tuple[torch.Tensor, torch.Tensor]] | None], num_layers: int,
                 dtype: torch.dtype, device) -> tuple[list[tuple[torch.Tensor, torch.Tensor]] | None, torch.Tensor]:
    """Stack per-row prefixes into per-layer (key, value) for a cache, and the prefix mask [B, P]."""
    lengths = [0 if p is None else p[0][0].shape[1] for p in prefixes]
    longest = max(lengths, default=0)
    mask = torch.zeros(len(prefixes), longest, dtype=torch.long, device=device)
    if longest == 0:
        return None, mask
    template = next(p for p in prefixes if p is not None)
    heads, head_dim = template[0][0].shape[0], template[0][0].shape[2]
    layers = []
    for layer in range(num_layers):
        keys = torch.zeros(len(prefixes), heads, longest, head_dim, dtype=dtype, device=device)
        values = torch.zeros_like(keys)
        for row, (prefix, n) in enumerate(zip(prefixes, lengths)):
            if prefix is not None:
                keys[row, :, longest - n:] = prefix[layer][0].to(device, dtype)
                values[row, :, longest - n:] = prefix[layer][1].to(device, dtype)
        layers.append((keys, values))
    for row, n in enumerate(lengths):
        mask[row, longest - n:] = 1
    return layers, mask


def cache_argument(model) -> str | None:
    """The keyword under which ``model``'s forward takes the KV cache, and the output attribute
    that hands it back: ``"cache"`` from transformers 5.24, ``"past_key_values"`` before; None
    when the forward takes no cache at all (DistilBERT), so no prefix can be fed to it.

    The one place that knows the name. 5.24 renamed ``past_key_values`` to ``cache`` in forwards
    and outputs alike. Until 5.40 the old keyword still reaches ``cache`` through ``@deprecate_kwarg``
    (with a FutureWarning) and ``out.past_key_values`` is an alias of ``out.cache``. Past the shim
    the old keyword rides along in ``**kwargs`` and the layers drop it for ``cache=None``: on 5.24,
    the undecorated ``LlamaModel.forward`` given ``past_key_values=`` a prefix's cache is off by 0.36
    in the last logits, a prefix row silently run without its prefix. So the name is read off the
    signature, not the version; once per model class (``inspect.signature`` follows ``__wrapped__``)."""
    return _cache_argument(type(model))


@functools.cache
def _cache_argument(cls: type) -> str | None:
    params = inspect.signature(cls.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def cache_kwargs(model, cache) -> dict:
    """``{name: cache}`` for ``model(**...)``, under the name its forward takes (see cache_argument)."""
    name = cache_argument(model)
    if name is None:
        if cache is not None:
            raise ValueError(f"{type(model).__name__}.forward takes no KV cache; a prefix cannot be applied")
        return {}
    return {name: cache}


def returned_cache(model, out):
    """The cache a forward with ``use_cache=True`` returned (``out.cache`` from 5.24, else ``out.past_key_values``)."""
    return getattr(out, cache_argument(model))


def make_cache(layers: list[tuple[torch.Tensor, torch.Tensor]] | None):
    """A fresh DynamicCache pre-filled with the prefixes (the model appends to it, so one per call)."""
    if layers is None:
        return None
    from transformers import DynamicCache

    return DynamicCache(layers)  # what peft's get_prompt builds for one prefix, here per row


def position_ids(token_mask: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """Each row's real tokens at ``offset + 0, 1, ...`` whatever the padding side."""
    pos = token_mask.long().cumsum(-1) - 1
    pos = pos + torch.tensor(offsets, dtype=torch.long, device=token_mask.device)[:, None]
    return pos.masked_fill(token_mask == 0, 0)
