"""Adapter methods: a training config -> a peft config attached to the frozen base.

Each method's builder is named by its ``adapters.tasks`` entry (``Method.builder``) and has the
signature documented there.
"""

from __future__ import annotations

from adapters.base.quiet import quiet_loading
from adapters.config import TrainConfig
from adapters.errors import MethodError
from adapters.tasks import METHODS, TASKS


def default_lora_targets(model_type: str) -> list[str] | str:
    """peft's per-architecture defaults (query/value projections); every linear layer otherwise."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

    return list(MAPPING.get(model_type, [])) or "all-linear"


def lora_config(cfg: TrainConfig, model_config, task_type: str, heads: list[str]):
    from peft import LoraConfig

    targets = cfg.lora.target_modules or default_lora_targets(model_config.model_type)
    return LoraConfig(task_type=task_type, r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                      lora_dropout=cfg.lora.dropout, target_modules=targets,
                      modules_to_save=heads or None)


def prefix_config(cfg: TrainConfig, model_config, task_type: str, heads: list[str]):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=cfg.prefix.num_virtual_tokens,
                              prefix_projection=cfg.prefix.projection,
                              encoder_hidden_size=cfg.prefix.projection_hidden_size,
                              modules_to_save=heads or None)


def peft_config(cfg: TrainConfig, model_config, heads: list[str]):
    """The peft config of ``cfg.method`` for ``cfg.task``, from the method's registered builder."""
    build = METHODS[cfg.method].build()
    return build(cfg, model_config, TASKS[cfg.task].peft_task_type, heads)


def attach(model, cfg: TrainConfig, heads: list[str]):
    """Prepare a (possibly quantized) base for training and wrap it with the adapter."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        with quiet_loading():  # peft calls a transformers property deprecated in v5
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.training.gradient_checkpointing)
    elif cfg.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        return get_peft_model(model, peft_config(cfg, model.config, heads))
    except ValueError as exc:
        raise MethodError(f"cannot attach {cfg.method} to this base: {exc}",
                          "check lora.target_modules against the base's module names, or use all-linear") from None
