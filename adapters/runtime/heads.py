"""Per-adapter classifier heads over one shared transformer body.

A classification adapter saves its head (``score`` on decoders, ``classifier`` and BERT's pooler on
encoders) next to its LoRA matrices or prefix. Rather than re-implement every architecture's pooling
(last non-pad token, [CLS] + pooler + dropout, RoBERTa's dense head ...), each adapter gets the
architecture's own ``...ForSequenceClassification`` module with its body swapped for a ``_Replay``
that hands back hidden states the shared body already computed for those rows. The head code that
runs is transformers' own, so its output matches a single-adapter PeftModel.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from adapters.base.quiet import quiet_loading
from adapters.errors import BaseMismatchError, UsageError


class _Replay(nn.Module):
    """Stands in for the body: returns the rows' precomputed hidden states (and, for BERT-style
    models, applies this adapter's own pooler, which peft saves as part of the head)."""

    def __init__(self, pooler: nn.Module | None):
        super().__init__()
        self.pooler = pooler
        self.hidden: torch.Tensor | None = None

    def forward(self, *args, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

        hidden = self.hidden
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=hidden, pooler_output=pooled)


def head_template(config, n_labels: int) -> nn.Module:
    """The architecture's ``...ForSequenceClassification`` on the meta device, its body already
    swapped for a ``_Replay``: what every head of ``n_labels`` starts from. Building it runs the
    whole model's constructor (tens of ms), so an engine builds it once per label count."""
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(config)
    cfg.num_labels = n_labels
    with torch.device("meta"), quiet_loading():
        model = AutoModelForSequenceClassification.from_config(cfg)
    body_name = model.base_model_prefix
    setattr(model, body_name, _Replay(getattr(getattr(model, body_name), "pooler", None)))
    return model.eval()


class Head:
    """One adapter's classifier: ``logits(hidden, input_ids, attention_mask)`` for its rows."""

    def __init__(self, template: nn.Module, state: dict[str, torch.Tensor], labels: list[str] | None,
                 resident: nn.Module, dtype: torch.dtype, device):
        model = copy.deepcopy(template)  # meta tensors: copies structure only
        n_labels = model.config.num_labels
        self.replay = getattr(model, model.base_model_prefix)
        # The adapter's head weights; anything it did not save (a pooler left frozen) comes from
        # the resident base, which loaded it from the checkpoint.
        merged = set()
        for name, param in list(model.named_parameters()) + list(model.named_buffers()):
            source = state.get(name)
            if source is None and ".pooler." in name:
                try:
                    source = resident.get_parameter(name)
                except AttributeError:
                    source = None
            if source is None or tuple(source.shape) != tuple(param.shape):
                raise BaseMismatchError(f"classifier head weight '{name}' missing or of another shape in the adapter",
                                 "the adapter does not fit this base; retrain it on this base")
            source = _with_lora(name, source, state, merged)
            _assign(model, name, source.detach().to(device, dtype if source.is_floating_point() else source.dtype))
        known = merged | {name for name, _ in list(model.named_parameters()) + list(model.named_buffers())}
        unused = sorted(set(state) - known)
        if unused:
            # Trained tensors outside the head (a body layer in modules_to_save, trained biases):
            # serving without them would answer differently from the adapter, so refuse instead.
            raise UsageError(f"the adapter trains tensors outside its classifier head ({', '.join(unused[:3])}"
                             f"{', …' if len(unused) > 3 else ''}), which the runtime does not serve per row",
                             "use adapters.load() for it")
        self.model = model
        self.labels = [labels[i] if labels else str(i) for i in range(n_labels)]

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.replay.hidden = hidden
        try:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        finally:
            self.replay.hidden = None


def label_count(state: dict[str, torch.Tensor], labels: list[str] | None) -> int:
    return len(labels) if labels else _labels_from_state(state)


def _labels_from_state(state: dict[str, torch.Tensor]) -> int:
    # The output layer is the last 2-D weight whose rows are labels: score.weight / classifier.weight.
    for key in ("score.weight", "classifier.weight", "classifier.out_proj.weight"):
        if key in state:
            return state[key].shape[0]
    raise UsageError("a classification adapter without label names or a recognisable head",
                     "train it with adapters train, which records the labels")


def _with_lora(name: str, weight: torch.Tensor, state: dict[str, torch.Tensor], merged: set[str]) -> torch.Tensor:
    """``weight`` plus the adapter's LoRA on it (A and B, scaling folded into B; adapter_parts puts
    LoRA on the pooler here), merged in float32. Merged or added per call, the product is the same
    up to float rounding, and the head runs only for its own rows."""
    module = name.removesuffix(".weight")
    a, b = state.get(f"{module}.lora_A.weight"), state.get(f"{module}.lora_B.weight")
    if a is None or b is None or module == name:
        return weight
    if (b.shape[0], a.shape[1]) != tuple(weight.shape):
        raise BaseMismatchError(f"the adapter's LoRA on '{module}' is {a.shape[1]}->{b.shape[0]}, the layer here is "
                                f"{weight.shape[1]}->{weight.shape[0]}", "the adapter does not fit this base; "
                                "retrain it on this base")
    merged.update((f"{module}.lora_A.weight", f"{module}.lora_B.weight"))
    return (weight.float() + b.float().to(weight.device) @ a.float().to(weight.device)).to(weight.dtype)


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[attr] = tensor
