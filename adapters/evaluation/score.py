"""`adapters eval`: score a trained adapter on any dataset, with its own label order."""

from __future__ import annotations

from pathlib import Path

from adapters.config import apply_overrides, validate
from adapters.data import batching as B
from adapters.data import splits as D
from adapters.errors import UsageError
from adapters.evaluation.loop import evaluate
from adapters.inference import load
from adapters.tasks import TASKS


def score_adapter(adapter: str | Path, data: str | None = None, split: str = "test",
                  overrides: list[str] | None = None, base: str | None = None,
                  store_root: str | Path | None = None) -> dict:
    from adapters.artifact import AdapterMeta, adapter_dir

    directory = adapter_dir(adapter, store_root)
    meta = AdapterMeta.read(directory)
    raw = dict(meta.lineage.get("training") or {})
    if not raw:
        if data is None:
            raise UsageError(f"{adapter} records no training data", "pass --data and the column mapping with --set")
        raw = {"name": "eval", "base": base or meta.base or "unknown", "task": meta.task, "data": {"source": data}}
    raw.setdefault("data", {})
    if data is not None:
        raw["data"] = {**raw["data"], "source": data}
    raw = apply_overrides(raw, overrides or [])
    if meta.labels:
        # Score with the adapter's own label ids, whatever order the new data would discover.
        raw["data"]["labels"] = meta.labels
    cfg = validate(raw, "eval settings")
    labels = meta.labels
    if not TASKS[meta.task].generative and not labels:
        labels = _name_outputs(adapter, meta.num_labels, cfg.data.labels)
    splits = D.load_splits(cfg.data, cfg.task, adapter_labels=bool(labels))  # bad data: before loading
    loaded = load(base, directory)
    loaded.tokenizer.padding_side = "right"
    tokenized = B.tokenize(splits, loaded.tokenizer, cfg.data.max_length)
    if split == "all":
        from datasets import concatenate_datasets

        dataset = concatenate_datasets([tokenized["train"], tokenized["dev"], tokenized["test"]])
    else:
        dataset = tokenized[split]
    if len(dataset) == 0:
        raise UsageError(f"the {split} split of {cfg.data.source} is empty", "choose another --split")
    result = evaluate(loaded.model, dataset, B.Collator(loaded.tokenizer, cfg.task), cfg.task, labels,
                      cfg.training.eval_batch_size, loaded.model.device)
    result["rows"] = len(dataset)
    return result


def _name_outputs(adapter, outputs: int | None, given: list[str] | None) -> list[str]:
    """Label names for an adapter that records none (a PEFT directory without label_map.json):
    only the user knows which data label each head output means, so they are asked for."""
    if given is None:
        count = f"its head has {outputs} outputs" if outputs else "its head's size is unknown"
        example = ", ".join(f"label{i}" for i in range(outputs or 2))
        raise UsageError(f"{adapter} records no label names ({count}), so the data's labels cannot be "
                         "matched to its outputs",
                         f"name them in the order of its outputs: --set 'data.labels=[{example}]'")
    if outputs and len(given) != outputs:
        raise UsageError(f"data.labels names {len(given)} labels but the head of {adapter} has {outputs} outputs",
                         f"list exactly {outputs} labels, in the order of its outputs")
    return list(given)
