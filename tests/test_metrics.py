"""adapters.evaluation.metrics against hand-computed values."""

from __future__ import annotations

import json
import math

import pytest
from rich.console import Console

from adapters.evaluation.metrics import (
    METRIC_DIRECTIONS,
    classification_metrics,
    entity_metrics,
    lm_metrics,
    metrics_table,
)

LABELS = ["cat", "dog", "fox"]
# true: cat cat cat dog dog fox      pred: cat dog cat dog fox fox
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 1, 0, 1, 2, 2]


def test_classification_by_hand():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # cat: P 2/2 R 2/3; dog: P 1/2 R 1/2; fox: P 1/2 R 1/1
    p = [1.0, 0.5, 0.5]
    r = [2 / 3, 0.5, 1.0]
    f = [2 * a * b / (a + b) for a, b in zip(p, r)]  # 0.8, 0.5, 2/3
    assert m["precision_macro"] == pytest.approx(sum(p) / 3)
    assert m["recall_macro"] == pytest.approx(sum(r) / 3)
    assert m["f1_macro"] == pytest.approx(sum(f) / 3)
    assert m["f1_weighted"] == pytest.approx((3 * f[0] + 2 * f[1] + 1 * f[2]) / 6)
    assert m["per_class"]["cat"] == {"precision": 1.0, "recall": pytest.approx(2 / 3),
                                     "f1": pytest.approx(0.8), "support": 3}
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    json.dumps(m)  # goes into run logs and lineage as is


def test_classification_absent_class_is_reported_without_warnings(recwarn):
    m = classification_metrics([0, 0, 1], [0, 0, 1], LABELS)
    assert m["per_class"]["fox"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]
    # Averages over the classes present (scikit-learn's convention): fox has no rows to score.
    assert m["accuracy"] == 1.0 and m["f1_macro"] == pytest.approx(1.0)
    assert not [w for w in recwarn if "zero" in str(w.message).lower()]


def test_lm_metrics():
    m = lm_metrics(total_loss=20.0, total_tokens=10)
    assert m["loss"] == pytest.approx(2.0)
    assert m["perplexity"] == pytest.approx(math.exp(2.0))
    capped = lm_metrics(total_loss=1e6, total_tokens=1)
    assert math.isfinite(capped["perplexity"]) and capped["loss"] == 1e6
    json.dumps(capped)
    with pytest.raises(ValueError):
        lm_metrics(1.0, 0)


def test_entity_metrics_exact_spans():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"]]
    m = entity_metrics(true, pred)
    # predicted PER, LOC both correct; ORG missed: P 2/2, R 2/3
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(0.8)
    assert m["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["accuracy"] == pytest.approx(5 / 6)  # token level


def test_entity_metrics_boundary_and_type_mismatches():
    true = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]]
    # PER span cut short (B-PER, then I-ORG starts an ORG span) and LOC span too long: none match.
    pred = [["B-PER", "I-ORG", "O", "B-LOC", "I-LOC", "I-LOC"]]
    m = entity_metrics(true, pred)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert set(m["per_type"]) == {"LOC", "ORG", "PER"}
    # CoNLL style: an I- tag after O starts an entity, so I-LOC alone matches B-LOC.
    m = entity_metrics([["O", "B-LOC", "I-LOC"]], [["O", "I-LOC", "I-LOC"]])
    assert m["f1"] == 1.0
    # B- in the middle of a span splits it in two.
    m = entity_metrics([["B-PER", "I-PER"]], [["B-PER", "B-PER"]])
    assert m["precision"] == 0.0 and m["recall"] == 0.0


def test_entity_metrics_no_entities_and_bad_input():
    m = entity_metrics([["O", "O"]], [["O", "O"]])
    assert m["f1"] == 0.0 and m["per_type"] == {} and m["accuracy"] == 1.0
    with pytest.raises(ValueError):
        entity_metrics([["O", "O"]], [["O"]])


def test_directions_cover_every_top_level_metric():
    produced = {
        **classification_metrics(Y_TRUE, Y_PRED, LABELS),
        **lm_metrics(3.0, 2),
        **entity_metrics([["B-PER"]], [["B-PER"]]),
    }
    scalars = {k for k, v in produced.items() if isinstance(v, (int, float))}
    assert scalars <= set(METRIC_DIRECTIONS)
    assert METRIC_DIRECTIONS["loss"] == "min" and METRIC_DIRECTIONS["f1_macro"] == "max"
    assert set(METRIC_DIRECTIONS.values()) == {"max", "min"}


def test_metrics_table_renders_headline_and_classes():
    console = Console(width=100, record=True)
    console.print(metrics_table(classification_metrics(Y_TRUE, Y_PRED, LABELS), title="dev"))
    text = console.export_text()
    assert "f1_macro" in text and "0.6556" in text
    assert "class dog" in text and "n=2" in text
    assert "confusion_matrix" not in text
    console.print(metrics_table(entity_metrics([["B-PER", "O"]], [["B-PER", "O"]])))
    assert "type PER" in console.export_text()
