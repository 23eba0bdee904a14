"""Load a (quantized, frozen) base model and its tokenizer for a task."""

from __future__ import annotations

import warnings

import torch

from adapters.base.device import DevicePlan, keep_4bit_layout, quantization_config
from adapters.base.quiet import quiet_bitsandbytes, quiet_loading
from adapters.base.resolve import ResolvedBase
from adapters.errors import BaseModelError, MethodError
from adapters.tasks import TASKS

# peft reads a property that transformers 5 deprecated; the warning is peft's to fix, not the user's.
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)

ENCODER_ONLY = {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "albert",
                "mpnet", "modernbert", "camembert"}


def auto_class(task: str):
    import transformers

    return getattr(transformers, TASKS[task].auto_class)


def load_model_config(base: ResolvedBase, task: str | None = None):
    """The base's transformers config; with ``task``, also checked to fit it (check_task_fits),
    so a config read for a task is checked once, before anything heavy is loaded."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(base.path, revision=base.revision)
    except (OSError, ValueError) as exc:
        raise BaseModelError(
            f"cannot load base model '{base.id}': {str(exc).splitlines()[0]}",
            "use a built-in base (`adapters models`), a local model directory, a .gguf file, "
            "or an HF id while the hub is reachable",
        ) from None
    if task is not None:
        check_task_fits(config, task)
    return config


def check_task_fits(config, task: str) -> None:
    spec = TASKS[task]
    if spec.needs_decoder and config.model_type in ENCODER_ONLY:
        others = " or ".join(t.name for t in TASKS.values() if not t.needs_decoder)
        raise MethodError(f"{task} needs a decoder base; '{config.model_type}' is an encoder",
                          f"use task: {others}, or a decoder base like smollm2-135m")
    # The auto class knows which architectures have this task's head; from_pretrained would
    # refuse the others later, with a message about config classes.
    mapping = getattr(auto_class(task), "_model_mapping", None)
    if mapping is not None and type(config) not in mapping:
        raise MethodError(f"'{config.model_type}' has no {task} head in transformers ({spec.auto_class})",
                          "use a base whose architecture has one, e.g. minilm-l6 (an encoder) or "
                          "smollm2-135m (a decoder)")


def head_modules(task: str, config) -> list[str]:
    """Names of the task head modules (``classifier``, ``score`` ...), derived from the model class:
    the top-level children that are not the shared transformer body."""
    if TASKS[task].generative:  # the LM head is the base's own, kept frozen
        return []
    with torch.device("meta"), quiet_loading():
        model = auto_class(task).from_config(config)
    body = model.base_model_prefix
    heads = [name for name, module in model.named_children()
             if name != body and any(True for _ in module.parameters())]
    # BERT-style classifiers read a pooler (dense + tanh over [CLS]) that pretraining left unsuited
    # to the task; it is part of the head: trained, saved with the adapter, never quantized.
    if TASKS[task].labels == "row" and getattr(getattr(model, body, None), "pooler", None) is not None:
        heads.append(f"{body}.pooler")
    return heads


# Prompt format for causal-lm tokenizers without a chat template (Alpaca style). Training
# (data.batching) and inference both use it, so an adapter sees at inference what it was trained on.
PROMPT_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def format_prompt(tokenizer, prompt: str) -> str:
    """The prompt text the model sees before its response (chat template when it has one)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, tokenize=False)
    return PROMPT_TEMPLATE.format(prompt=prompt)


def load_tokenizer(base: ResolvedBase, task: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base.path, revision=base.revision)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"cannot load the tokenizer of '{base.id}': {str(exc).splitlines()[0]}",
                             "the base directory needs tokenizer files next to config.json") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_base_model(base: ResolvedBase, task: str, quant: str, plan: DevicePlan,
                    label_names: list[str] | None = None, config=None, pad_token_id: int | None = None):
    """The frozen base with a fresh (unquantized) task head; quantized as asked. ``config``: the
    base's config, already read by the caller with ``load_model_config(base, task)`` (checked) or
    chosen to suit ``task``."""
    config = config or load_model_config(base, task)
    kwargs = {}
    if label_names:
        kwargs = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                  "label2id": {name: i for i, name in enumerate(label_names)}}
    heads = head_modules(task, config)
    qconfig = quantization_config(quant, plan, heads)
    unquantized_cpu = qconfig is None and plan.device == "cpu"
    dtype = torch.float32 if unquantized_cpu else plan.compute_dtype
    quiet_bitsandbytes()
    try:
        with quiet_loading():
            model = auto_class(task).from_pretrained(
                base.path, revision=base.revision, quantization_config=qconfig, dtype=dtype,
                device_map={"": plan.device}, **kwargs)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"cannot load base model '{base.id}': {str(exc).splitlines()[0]}",
                             "check the base path or id; built-in bases: see `adapters models`") from None
    if getattr(model.config, "pad_token_id", None) is None and pad_token_id is not None:
        # Decoder classifiers find each row's last real token through pad_token_id.
        model.config.pad_token_id = pad_token_id
    keep_4bit_layout(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, heads
