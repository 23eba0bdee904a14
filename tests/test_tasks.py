"""The task and method registry (adapters.tasks): every name an entry gives resolves, the modules
that read it agree with it, and a new entry is all a new task needs."""

import csv
import dataclasses
from typing import get_args

import pytest

from adapters.tasks import METHODS, TASKS, method_for_peft_type, register_task, task_for_peft_type


@pytest.mark.parametrize("task", TASKS.values(), ids=lambda t: t.name)
def test_task_entry_resolves(task):
    import transformers

    from adapters.config import DataConfig, TrainConfig
    from adapters.evaluation.metrics import METRIC_DIRECTIONS

    assert callable(task.encode())
    scorer = task.scores()
    assert callable(scorer.add) and callable(scorer.result)
    assert hasattr(transformers, task.auto_class)
    assert task.default_metric in task.stopping_metrics
    assert set(task.stopping_metrics) <= set(METRIC_DIRECTIONS)
    for role in task.roles:  # splits.column_field: the DataConfig field naming the role's column
        assert f"{role}_column" in DataConfig.model_fields
    for key, _ in task.form_columns:
        section, _, field = key.partition(".")
        assert TrainConfig.model_fields[section].annotation.model_fields[field]
    assert task.labels in ("row", "token", None)
    assert (task.label_role is None) == task.generative


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_method_entry_resolves(method):
    from adapters.config import TrainConfig

    assert callable(method.build())
    assert method.config_section in TrainConfig.model_fields


def test_config_allows_exactly_the_registered_names():
    # pydantic fixes a Literal's values when TrainConfig is built: registration happens when
    # adapters.tasks is imported, before adapters.config reads it.
    from adapters.config import MethodKind, TaskKind

    assert get_args(TaskKind) == tuple(TASKS)
    assert get_args(MethodKind) == tuple(METHODS)


def test_peft_names_map_back():
    for task in TASKS.values():
        assert task_for_peft_type(task.peft_task_type) == task.name
    for method in METHODS.values():
        assert method_for_peft_type(method.peft_type) == method.name
    assert task_for_peft_type("SEQ_2_SEQ_LM") is None
    assert method_for_peft_type("IA3") == "ia3"


def test_store_map_agrees_with_the_registry():
    """The store keeps its own torch-free copy of peft's names (it cannot import adapters)."""
    from adapters_store.files import PEFT_TYPES, TASK_TYPES

    assert {t.peft_task_type: t.name for t in TASKS.values()} == TASK_TYPES
    assert {m.peft_type: m.name for m in METHODS.values()} == PEFT_TYPES


@pytest.fixture
def extra_task():
    """A copy of classification under another name, for as long as a test runs."""
    task = register_task(dataclasses.replace(TASKS["classification"], name="sentiment-copy"))
    try:
        yield task
    finally:
        TASKS.pop(task.name)


def test_a_new_entry_is_all_a_task_needs(extra_task, tmp_path):
    """Data, batching and the Train form read the entry; nothing else names the task."""
    from adapters.config import DataConfig
    from adapters.data.splits import column_mapping, load_splits
    from adapters_tui.train_config import visible_keys

    path = tmp_path / "d.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([f"review {i}", "pos" if i % 2 else "neg"] for i in range(40))
    data = DataConfig(source=str(path))
    assert column_mapping(data, extra_task.name) == column_mapping(data, "classification")
    ours, theirs = load_splits(data, extra_task.name), load_splits(data, "classification")
    assert ours.label_names == theirs.label_names == ["neg", "pos"]
    assert ours.class_balance == theirs.class_balance
    assert list(ours.train["text"]) == list(theirs.train["text"])
    assert ours.train.features == theirs.train.features
    assert visible_keys(extra_task.name, "lora") == visible_keys("classification", "lora")
