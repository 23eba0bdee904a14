"""`adapters eval`: score a trained adapter on any dataset, with its own label order."""

from __future__ import annotations

from pathlib import Path

from adapters import batching as B
from adapters import data as D
from adapters.config import apply_overrides, validate
from adapters.errors import UsageError
from adapters.evaluate import evaluate
from adapters.inference import load, read_adapter_metadata


def score_adapter(adapter: str | Path, data: str | None = None, split: str = "test",
                  overrides: list[str] | None = None, base: str | None = None,
                  store_root: str | Path | None = None) -> dict:
    from adapters.api import adapter_dir

    directory = adapter_dir(adapter, store_root)
    meta = read_adapter_metadata(directory)
    raw = dict(meta["lineage"].get("training") or {})
    if not raw:
        if data is None:
            raise UsageError(f"{adapter} records no training data", "pass --data and the column mapping with --set")
        raw = {"name": "eval", "base": base or meta["base"] or "unknown", "task": meta["task"], "data": {"source": data}}
    raw.setdefault("data", {})
    if data is not None:
        raw["data"] = {**raw["data"], "source": data}
    raw = apply_overrides(raw, overrides or [])
    if meta["labels"]:
        # Score with the adapter's own label ids, whatever order the new data would discover.
        raw["data"]["labels"] = meta["labels"]
    cfg = validate(raw, "eval settings")
    splits = D.load_splits(cfg.data, cfg.task, adapter_labels=bool(meta["labels"]))  # bad data: before loading
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
    result = evaluate(loaded.model, dataset, B.Collator(loaded.tokenizer, cfg.task), cfg.task, meta["labels"],
                      cfg.training.eval_batch_size, loaded.model.device)
    result["rows"] = len(dataset)
    return result
