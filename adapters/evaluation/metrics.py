"""Evaluation metrics per task, which way each one improves, and a compact table to show them.

Every top-level number is a plain float or int (JSON-ready: metrics go into run logs and the store's
lineage); nested per-class / per-type dicts and the confusion matrix sit beside them.
"""

from __future__ import annotations

import math
import warnings

# loss above this is a model that knows nothing; exp() of it is already astronomically large, and
# capping keeps perplexity a finite, JSON-serializable float (exp overflows past ~709).
MAX_LOSS_FOR_PERPLEXITY = 50.0

# For early stopping and "best checkpoint": does a larger value mean better?
METRIC_DIRECTIONS: dict[str, str] = {
    # classification_metrics
    "accuracy": "max", "precision_macro": "max", "recall_macro": "max", "f1_macro": "max",
    "f1_weighted": "max",
    # lm_metrics (and any eval loss the trainer reports)
    "loss": "min", "perplexity": "min",
    # entity_metrics (accuracy above is its token accuracy)
    "precision": "max", "recall": "max", "f1": "max",
}


def classification_metrics(y_true: list[int], y_pred: list[int], label_names: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    # Per class: every class of the label set, in label order, even when absent from this eval
    # set. Averages: scikit-learn's convention, over the labels present in y_true or y_pred only;
    # a class with no rows and no predictions has no F1 to average (counting it as 0 would halve
    # a perfect score on data with one class). zero_division=0 instead of warnings.
    labels = list(range(len(label_names)))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = sorted(set(y_true) | set(y_pred)) or labels
    macro = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro",
                                            zero_division=0)
    weighted = precision_recall_fscore_support(y_true, y_pred, labels=present, average="weighted",
                                               zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "f1_weighted": float(weighted[2]),
        "per_class": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                             "support": int(support[i])} for i, name in enumerate(label_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def lm_metrics(total_loss: float, total_tokens: int) -> dict:
    """``total_loss`` is the summed per-token negative log-likelihood over ``total_tokens``."""
    if total_tokens <= 0:
        raise ValueError("lm_metrics needs at least one target token")
    loss = float(total_loss) / total_tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, MAX_LOSS_FOR_PERPLEXITY))}


def entity_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
    """Entity-level (exact span and type) micro precision/recall/F1, CoNLL-style (seqeval).

    seqeval's default mode follows conlleval: an I-X that does not continue an X entity starts a
    new one, and a span counts only when its start, end and type all match.
    """
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    if len(true_tags) != len(pred_tags) or any(len(t) != len(p) for t, p in zip(true_tags, pred_tags)):
        raise ValueError("true_tags and pred_tags must have the same sentences and lengths")
    with warnings.catch_warnings():
        # seqeval warns when a side has no entities at all; zero_division=0 already says it.
        warnings.simplefilter("ignore")
        report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
        result = {
            "precision": float(precision_score(true_tags, pred_tags, zero_division=0)),
            "recall": float(recall_score(true_tags, pred_tags, zero_division=0)),
            "f1": float(f1_score(true_tags, pred_tags, zero_division=0)),
            "accuracy": float(accuracy_score(true_tags, pred_tags)) if any(true_tags) else 0.0,
        }
    result["per_type"] = {
        kind: {"precision": float(v["precision"]), "recall": float(v["recall"]),
               "f1": float(v["f1-score"]), "support": int(v["support"])}
        for kind, v in sorted(report.items()) if not kind.endswith(" avg")
    }
    return result


def metrics_table(metrics: dict, title: str | None = None):
    """A compact rich Table: the headline numbers, then one row per class / entity type."""
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    for key, kind in (("per_class", "class"), ("per_type", "type")):
        rows = metrics.get(key)
        if not rows:
            continue
        table.add_section()
        for name, m in rows.items():
            table.add_row(f"{kind} {name}", f"P {m['precision']:.3f}  R {m['recall']:.3f}  "
                                            f"F1 {m['f1']:.3f}  n={m['support']}")
    return table


# The number that best summarises a stored version: the first of these a split holds, test before
# dev (the CLI's list and the TUI's store table both show it).
HEADLINE_METRICS = ("f1_macro", "f1", "accuracy", "perplexity", "loss")
SPLIT_PREFERENCE = ("test", "dev")


def headline_metric(metrics: dict | None) -> tuple[str, float, str] | None:
    """(metric, value, split) for the number that best summarises a version, or None."""
    if not isinstance(metrics, dict):
        return None

    def first(part: dict) -> tuple[str, float] | None:
        for key in HEADLINE_METRICS:
            value = part.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return key, float(value)
        return None

    for split in SPLIT_PREFERENCE:
        part = metrics.get(split)
        found = first(part) if isinstance(part, dict) else None
        if found:
            return (*found, split)
    found = first(metrics)  # metrics stored flat (an imported adapter, a merge)
    return (*found, "") if found else None


def headline_text(metrics: dict | None) -> str:
    """``f1_macro 0.748 (test)``, or "" when a version has no metrics."""
    found = headline_metric(metrics)
    if found is None:
        return ""
    key, value, split = found
    return f"{key} {value:.3f}" + (f" ({split})" if split else "")
