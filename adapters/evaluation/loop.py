"""Scoring a model on a tokenized split, for every task kind.

``evaluate`` runs the batches; what a batch's outputs add up to is the task's scorer (named by its
``adapters.tasks`` entry): ``add(outputs, labels)`` per batch, then ``result()`` for the metrics.
"""

from __future__ import annotations

import math

import torch

from adapters.evaluation import metrics as M
from adapters.tasks import TASKS

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


class ClassificationScores:
    """One label per row: accuracy, precision, recall, F1 and the mean loss per row."""

    def __init__(self, label_names: list[str] | None):
        self.label_names = label_names
        self.total_loss, self.rows = 0.0, 0
        self.y_true: list[int] = []
        self.y_pred: list[int] = []

    def add(self, out, labels) -> None:
        # The loss from fp32 logits: the model's own is in the compute dtype, and a bf16 loss is
        # rounded to 3 significant digits.
        self.total_loss += torch.nn.functional.cross_entropy(out.logits.float(), labels, reduction="sum").item()
        self.rows += len(labels)
        self.y_true += labels.tolist()
        self.y_pred += out.logits.argmax(-1).tolist()

    def result(self) -> dict:
        return _with_loss(M.classification_metrics(self.y_true, self.y_pred, self.label_names),
                          self.total_loss, self.rows)


class LanguageModelScores:
    """Response tokens: the loss per token (every token weighs the same) and perplexity."""

    def __init__(self, label_names: list[str] | None = None):
        self.total_loss, self.tokens = 0.0, 0

    def add(self, out, labels) -> None:
        # Shifted like the model shifts its own loss: logits at t predict the token at t+1.
        logits = out.logits[:, :-1].float()  # no copy when already fp32
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum")
        self.total_loss += loss.item()
        self.tokens += int((target != -100).sum())

    def result(self) -> dict:
        return M.lm_metrics(self.total_loss, max(self.tokens, 1))


class EntityScores:
    """One tag per word: entity precision, recall, F1 (seqeval) and the mean loss per row."""

    def __init__(self, label_names: list[str] | None):
        self.label_names = label_names
        self.total_loss, self.rows = 0.0, 0
        self.tag_true: list[list[str]] = []
        self.tag_pred: list[list[str]] = []

    def add(self, out, labels) -> None:
        logits = out.logits.float()
        self.total_loss += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100).item() * len(labels)
        self.rows += len(labels)
        pred = out.logits.argmax(-1)
        for row_labels, row_pred in zip(labels.tolist(), pred.tolist()):
            keep = [(t, p) for t, p in zip(row_labels, row_pred) if t != -100]
            self.tag_true.append([self.label_names[t] for t, _ in keep])
            self.tag_pred.append([self.label_names[p] for _, p in keep])

    def result(self) -> dict:
        return _with_loss(M.entity_metrics(self.tag_true, self.tag_pred), self.total_loss, self.rows)


def _with_loss(result: dict, total_loss: float, rows: int) -> dict:
    # A batch whose labels are all ignored has a nan mean loss, an overflow an inf: both read as nan.
    mean_loss = total_loss / max(rows, 1)
    result["loss"] = mean_loss if math.isfinite(mean_loss) else float("nan")
    return result


@torch.no_grad()
def evaluate(model, dataset, collator, task: str, label_names: list[str] | None, batch_size: int,
             device) -> dict:
    """Metrics for ``task`` on ``dataset`` (a tokenized split). The model is left in eval mode."""
    model.eval()
    columns = [c for c in dataset.column_names if c != "length"]
    scores = TASKS[task].scores()(label_names)
    # Batches of a generative task are capped by their logits' size (a row per vocabulary entry).
    vocab = model.config.vocab_size if TASKS[task].generative else None
    for idx in eval_batches(dataset, batch_size, vocab):
        rows = dataset.select(idx).select_columns(columns)
        batch = _to_device(collator([rows[i] for i in range(len(rows))]), device)
        scores.add(model(**batch), batch["labels"])
    return scores.result()
