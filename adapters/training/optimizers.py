"""The optimizer and learning-rate schedule of a run, from ``training.optimizer`` and
``training.lr_scheduler`` (see ``adapters.config``)."""

from __future__ import annotations

import math

import torch

from adapters.config import TrainingConfig
from adapters.errors import ConfigError


def check_optimizer(t: TrainingConfig, device: str) -> None:
    """Refuse, before anything loads, an optimizer the device cannot run."""
    if t.optimizer.name == "paged_adamw_8bit" and device != "cuda":
        raise ConfigError("training.optimizer paged_adamw_8bit needs a CUDA GPU (bitsandbytes pages its state "
                          "to GPU memory)", "use optimizer: adamw on this machine")


def build_optimizer(groups: list[dict], t: TrainingConfig) -> torch.optim.Optimizer:
    """``groups``: parameter groups, each with its own weight decay."""
    o = t.optimizer
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=t.learning_rate, betas=o.betas)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=t.learning_rate, momentum=o.momentum)
    if o.name == "adafactor":
        from transformers.optimization import Adafactor

        # At the configured learning rate, like the others: no relative step or parameter scaling.
        return Adafactor(groups, lr=t.learning_rate, scale_parameter=False, relative_step=False, warmup_init=False)
    import bitsandbytes as bnb

    return bnb.optim.PagedAdamW8bit(groups, lr=t.learning_rate, betas=o.betas)


def build_scheduler(optimizer: torch.optim.Optimizer, t: TrainingConfig, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of ``total_steps``, then the configured schedule."""
    from transformers import get_scheduler

    s, warmup = t.lr_scheduler, int(t.warmup_ratio * total_steps)
    if s.name in ("linear", "cosine", "constant"):
        name = "constant_with_warmup" if s.name == "constant" else s.name
        options = {"num_cycles": s.num_cycles} if s.name == "cosine" else {}
        return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,
                             scheduler_specific_kwargs=options)
    size = s.step_size or max(1, steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1) if warmup else 1.0
        done = (step - warmup) / size
        return s.gamma ** (math.floor(done) if s.name == "step" else done)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
