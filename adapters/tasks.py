"""The registry of tasks and adapter methods: every per-task and per-method fact in one entry.

Adding a task (or a method) is one ``register_task`` (``register_method``) call, the way peft adds
a method with ``register_peft_method``. Everything else reads these entries: the config's allowed
values, the data roles and features, the tokenizer encoder, the evaluation scorer, the early-stopping
metrics, the transformers auto class, the peft task type, the TUI's form columns, and whether the
runtime serves the task.

Cheap to import (no torch, transformers or datasets): the CLI's quick checks and the TUI read it.
Entries are registered when this module is imported, so register before anything reads the
registry at import time: ``adapters.config`` builds its allowed ``task:`` and ``method:`` values
from it once, when it is first imported.
The functions an entry names (encoder, scorer) are given as ``"module:attribute"`` and imported
when first used, so the registry sits below the modules that implement them. The store keeps its
own small map of peft's names (``adapters_store.files``): it must not import this package.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    name: str  # as written in configs: task: classification
    peft_task_type: str  # peft's TaskType value, as saved in adapter_config.json
    auto_class: str  # the transformers AutoModelFor... class that builds the base with its head
    # role -> datasets feature ("string", "int64", "list[string]", "list[int64]"); the first roles
    # without a default column are the ones every row must have.
    features: dict[str, str]
    # The two columns the TUI's Train form shows: (config key, label).
    form_columns: tuple[tuple[str, str], tuple[str, str]]
    encoder: str  # "module:function" (rows, tokenizer, max_length) -> input_ids/labels columns
    scorer: str  # "module:class" accumulating one eval pass into metrics
    stopping_metrics: tuple[str, ...]  # allowed training.early_stopping.metric values
    default_metric: str  # what "best" means when early stopping is not configured
    labels: str | None  # "row": one label per row, "token": one per word, None: no labels
    needs_decoder: bool  # only a decoder base can do it (causal-lm)
    served: bool  # adapters serve / the runtime engine load it

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def generative(self) -> bool:
        return self.labels is None

    @property
    def label_role(self) -> str | None:
        """The role holding the labels: its int64 values are ids into the label names."""
        return next((role for role, kind in self.features.items() if kind in ("int64", "list[int64]")), None)

    def encode(self):
        return _resolve(self.encoder)

    def scores(self):
        return _resolve(self.scorer)


@dataclass(frozen=True)
class Method:
    name: str  # as written in configs: method: lora
    peft_type: str  # peft's PeftType value, as saved in adapter_config.json
    config_section: str  # the TrainConfig field holding its options (lora:, prefix:)
    # "module:function" building the peft config: builder(cfg, model_config, task_type, heads) with
    # cfg the TrainConfig, model_config the base's transformers config, task_type the task's
    # peft_task_type, heads the task head modules trained and saved in full (modules_to_save).
    builder: str
    gradient_checkpointing: bool  # trains with training.gradient_checkpointing: true

    def build(self):
        return _resolve(self.builder)


TASKS: dict[str, Task] = {}
METHODS: dict[str, Method] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def task_for_peft_type(peft_task_type: str | None) -> str | None:
    """Our task name for peft's ``task_type`` (``SEQ_CLS`` -> classification), None if unknown."""
    return next((t.name for t in TASKS.values() if t.peft_task_type == peft_task_type), None)


def method_for_peft_type(peft_type: str | None) -> str:
    """Our method name for peft's ``peft_type`` (``LORA`` -> lora); other types keep peft's name,
    lower-cased (``ia3``), so a message can name what it is."""
    upper = str(peft_type or "").upper()
    return next((m.name for m in METHODS.values() if m.peft_type == upper), upper.lower())


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


register_task(Task(
    name="classification", peft_task_type="SEQ_CLS", auto_class="AutoModelForSequenceClassification",
    features={"text": "string", "text_pair": "string", "label": "int64"},
    form_columns=(("data.text_column", "text column"), ("data.label_column", "label column")),
    encoder="adapters.data.batching:encode_classification", scorer="adapters.evaluation.loop:ClassificationScores",
    stopping_metrics=("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "loss"),
    default_metric="f1_macro", labels="row", needs_decoder=False, served=True))
register_task(Task(
    name="causal-lm", peft_task_type="CAUSAL_LM", auto_class="AutoModelForCausalLM",
    features={"prompt": "string", "response": "string"},
    form_columns=(("data.prompt_column", "prompt column"), ("data.response_column", "response column")),
    encoder="adapters.data.batching:encode_causal", scorer="adapters.evaluation.loop:LanguageModelScores",
    stopping_metrics=("loss", "perplexity"), default_metric="loss", labels=None, needs_decoder=True,
    served=True))
register_task(Task(
    name="token-classification", peft_task_type="TOKEN_CLS", auto_class="AutoModelForTokenClassification",
    features={"tokens": "list[string]", "tags": "list[int64]"},
    form_columns=(("data.tokens_column", "tokens column"), ("data.tags_column", "tags column")),
    encoder="adapters.data.batching:encode_tokens", scorer="adapters.evaluation.loop:EntityScores",
    stopping_metrics=("f1", "precision", "recall", "loss"), default_metric="f1", labels="token",
    needs_decoder=False, served=False))

register_method(Method(name="lora", peft_type="LORA", config_section="lora",
                       builder="adapters.training.methods:lora_config", gradient_checkpointing=True))
register_method(Method(name="prefix", peft_type="PREFIX_TUNING", config_section="prefix",
                       builder="adapters.training.methods:prefix_config", gradient_checkpointing=False))
