"""Scoring a model on a tokenized split, for every task kind."""

from __future__ import annotations

import math

import torch

from adapters.evaluation import metrics as M

# A language model's logits are rows x length x vocabulary floats: 64 x 64 x 49k is 800 MB. Keep
# each evaluation batch under this many logits so peak memory stays near the training peak.
MAX_EVAL_LOGITS = 1 << 25


def eval_batches(dataset, batch_size: int, vocab_size: int | None = None) -> list[list[int]]:
    """Sorted by length so each batch pads little; order does not matter for scoring."""
    lengths = dataset["length"]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches, start = [], 0
    while start < len(order):
        size = batch_size
        if vocab_size:
            longest = lengths[order[min(start + size, len(order)) - 1]]
            size = max(1, min(size, MAX_EVAL_LOGITS // max(1, longest * vocab_size)))
        batches.append(order[start:start + size])
        start += size
    return batches


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, dataset, collator, task: str, label_names: list[str] | None, batch_size: int,
             device) -> dict:
    """Metrics for ``task`` on ``dataset`` (a tokenized split). The model is left in eval mode."""
    model.eval()
    columns = [c for c in dataset.column_names if c != "length"]
    total_loss, total_tokens = 0.0, 0
    y_true: list[int] = []
    y_pred: list[int] = []
    tag_true: list[list[str]] = []
    tag_pred: list[list[str]] = []
    vocab = model.config.vocab_size if task == "causal-lm" else None
    for idx in eval_batches(dataset, batch_size, vocab):
        rows = dataset.select(idx).select_columns(columns)
        batch = _to_device(collator([rows[i] for i in range(len(rows))]), device)
        out = model(**batch)
        labels = batch["labels"]
        if task == "causal-lm":
            # Token-weighted loss over response tokens: shift like the model does.
            logits = out.logits[:, :-1].float()  # no copy when already fp32
            target = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum")
            total_loss += loss.item()
            total_tokens += int((target != -100).sum())
        elif task == "classification":
            # The loss from fp32 logits: the model's own is in the compute dtype, and a bf16 loss is
            # rounded to 3 significant digits.
            total_loss += torch.nn.functional.cross_entropy(out.logits.float(), labels, reduction="sum").item()
            total_tokens += len(idx)
            y_true += labels.tolist()
            y_pred += out.logits.argmax(-1).tolist()
        else:
            logits = out.logits.float()
            total_loss += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100).item() * len(idx)
            total_tokens += len(idx)
            pred = out.logits.argmax(-1)
            for row_labels, row_pred in zip(labels.tolist(), pred.tolist()):
                keep = [(t, p) for t, p in zip(row_labels, row_pred) if t != -100]
                tag_true.append([label_names[t] for t, _ in keep])
                tag_pred.append([label_names[p] for _, p in keep])
    if task == "causal-lm":
        return M.lm_metrics(total_loss, max(total_tokens, 1))
    mean_loss = total_loss / max(total_tokens, 1)
    if task == "classification":
        result = M.classification_metrics(y_true, y_pred, label_names)
    else:
        result = M.entity_metrics(tag_true, tag_pred)
    result["loss"] = mean_loss if math.isfinite(mean_loss) else float("nan")
    return result
