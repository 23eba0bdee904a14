"""k-fold cross-validation: the folds partition train + dev exactly as scikit-learn's
StratifiedKFold does (test held out), and ``adapters cv`` stores one adapter per fold with its
lineage and reports mean ± sd over them."""

import csv
import json
import math
import random
from collections import Counter

import numpy as np
import pytest
import yaml
from sklearn.model_selection import StratifiedKFold

from adapters.cli.main import main
from adapters.config import DataConfig, SplitConfig
from adapters.data.splits import load_splits
from adapters.errors import ConfigError

from support.config import tiny_config

SENTIMENT = {"text_column": "review", "label_column": "sentiment"}


def sentiment(csv, **split) -> DataConfig:
    return DataConfig(source=str(csv), **SENTIMENT, split=split)


def rows(ds, *columns) -> list[tuple]:
    """Rows as tuples of their values' JSON, which sort as the pool is sorted (by its columns in
    name order, then by value)."""
    return [tuple(json.dumps(v, ensure_ascii=False) for v in values) for values in zip(*(ds[c] for c in columns))]


@pytest.mark.parametrize("k", [3, 5])
def test_classification_folds_partition_train_and_dev_like_stratified_kfold(sentiment_csv, k):
    plain = load_splits(sentiment(sentiment_csv), "classification")
    pool = Counter(rows(plain.train, "label", "text") + rows(plain.dev, "label", "text"))
    folds = [load_splits(sentiment(sentiment_csv, folds=k, fold=i), "classification") for i in range(k)]

    devs = [rows(f.dev, "label", "text") for f in folds]
    assert sum((Counter(d) for d in devs), Counter()) == pool  # disjoint, and together the pool
    for f, dev in zip(folds, devs):
        assert Counter(rows(f.train, "label", "text")) + Counter(dev) == pool
        assert f.test["text"] == plain.test["text"] and f.test["label"] == plain.test["label"]
    # Stratified: each class's rows in a fold are its pool count / k, rounded down or up.
    labels = Counter(label for label, _ in pool.elements())
    for dev in devs:
        counts = Counter(label for label, _ in dev)
        for label, n in labels.items():
            assert math.floor(n / k) <= counts[label] <= math.ceil(n / k), (counts, labels)

    # The independent reference: scikit-learn on the pool in content order (label, then text).
    ordered = sorted(pool.elements())
    y = [json.loads(label) for label, _ in ordered]
    reference = StratifiedKFold(n_splits=k, shuffle=True, random_state=42).split(np.zeros(len(y)), y)
    for dev, (_, expected) in zip(devs, reference):
        assert sorted(dev) == [ordered[i] for i in expected]


def test_folds_pool_a_given_dev_split_and_do_not_depend_on_row_order(sentiment_csv, tmp_path):
    with open(sentiment_csv, newline="") as fh:
        header, *body = list(csv.reader(fh))
    random.Random(1).shuffle(body)
    test, dev, train = body[:30], body[30:60], body[60:]

    def folder(name, **files):
        path = tmp_path / name
        path.mkdir()
        for split, table in files.items():
            with open(path / f"{split}.csv", "w", newline="") as fh:
                csv.writer(fh).writerows([header, *table])
        return path

    given = folder("given", train=train, dev=dev, test=test)
    pooled = folder("pooled", train=sorted(train + dev, reverse=True), test=test)
    for i in range(3):
        a, b = (load_splits(DataConfig(source=str(p), **SENTIMENT, split={"folds": 3, "fold": i}),
                            "classification") for p in (given, pooled))
        assert a.sizes == b.sizes == {"train": 140, "dev": 70, "test": 30}
        assert a.dev["text"] == b.dev["text"] and a.train["text"] == b.train["text"]
        assert a.test["text"] == b.test["text"]


def test_fold_all_trains_on_the_whole_pool(sentiment_csv):
    plain = load_splits(sentiment(sentiment_csv), "classification")
    every = load_splits(sentiment(sentiment_csv, folds=4, fold="all"), "classification")
    assert every.sizes["train"] == every.sizes["dev"] == plain.sizes["train"] + plain.sizes["dev"]
    assert every.test["text"] == plain.test["text"]


@pytest.fixture(scope="module")
def tagging_jsonl(tmp_path_factory):
    """Sentences with PER, LOC, both or no entities; the first entity's type decides the stratum."""
    rng = random.Random(0)
    people, places, filler = ["alice", "bob", "carol"], ["paris", "rome", "oslo"], ["saw", "the", "and", "today"]
    out = []
    for _ in range(90):
        tokens = [rng.choice(rng.choice([people, places, filler, filler])) for _ in range(rng.randint(2, 6))]
        tags = ["B-PER" if t in people else "B-LOC" if t in places else "O" for t in tokens]
        out.append({"tokens": tokens, "tags": tags})
    path = tmp_path_factory.mktemp("tagging") / "tagging.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def first_type(tags: list[str]) -> str:
    return next((t.partition("-")[2] for t in tags if t != "O"), "")


def test_token_classification_folds_are_whole_sentences_stratified_by_first_entity_type(tagging_jsonl):
    def cfg(**split):
        return DataConfig(source=str(tagging_jsonl), split=split)

    plain = load_splits(cfg(), "token-classification")
    names = plain.label_names

    def sentences(ds):
        return [(tuple(tokens), tuple(names[t] for t in tags)) for tokens, tags in zip(ds["tokens"], ds["tags"])]

    pool = Counter(sentences(plain.train) + sentences(plain.dev))
    k = 3
    devs = [sentences(load_splits(cfg(folds=k, fold=i), "token-classification").dev) for i in range(k)]
    assert sum((Counter(d) for d in devs), Counter()) == pool  # every sentence whole, in one fold
    strata = Counter(first_type(tags) for _, tags in pool.elements())
    assert set(strata) == {"PER", "LOC", ""}
    for dev in devs:
        counts = Counter(first_type(tags) for _, tags in dev)
        for kind, n in strata.items():
            assert math.floor(n / k) <= counts[kind] <= math.ceil(n / k), (counts, strata)


def test_causal_lm_folds_are_plain_kfold(chat_jsonl):
    def cfg(**split):
        return DataConfig(source=str(chat_jsonl), prompt_column="question", response_column="answer", split=split)

    plain = load_splits(cfg(), "causal-lm")
    pool = Counter(rows(plain.train, "prompt", "response") + rows(plain.dev, "prompt", "response"))
    devs = [rows(load_splits(cfg(folds=4, fold=i), "causal-lm").dev, "prompt", "response") for i in range(4)]
    assert sum((Counter(d) for d in devs), Counter()) == pool
    assert max(map(len, devs)) - min(map(len, devs)) <= 1


@pytest.mark.parametrize("split, message", [
    ({"folds": 1, "fold": 0}, "greater than or equal to 2"),
    ({"folds": 3, "fold": 3}, "fold 3 is not one of the 3 folds"),
    ({"folds": 3, "fold": -1}, "fold -1 is not one of the 3 folds"),
    ({"fold": 0}, "folds and fold go together"),
    ({"folds": 3}, "folds and fold go together"),
    ({"folds": 3, "fold": "some"}, "fold"),
])
def test_fold_options_are_validated(split, message):
    with pytest.raises(ValueError, match=message):
        SplitConfig(**split)


def test_too_few_rows_for_the_folds_is_a_data_error(sentiment_csv):
    with pytest.raises(ValueError, match="50 folds need at least 50 rows"):
        load_splits(sentiment(sentiment_csv, folds=50, fold=0, test=0.2).model_copy(
            update={"max_train_samples": 20}), "classification")


@pytest.fixture
def cv_config(tmp_path, tiny_bert, sentiment_csv):
    cfg = tiny_config(tiny_bert, sentiment_csv, name="cvtiny",
                      training={"epochs": 2, "max_steps": None, "batch_size": 32, "learning_rate": 5e-3,
                                "seed": 0, "log_every": 50})
    cfg["data"]["max_train_samples"] = 120
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def versions(store):
    from adapters_store import Store

    with Store(store) as s:
        return s.list(name="cvtiny")


def test_cv_end_to_end_stores_one_version_per_fold_and_reports_mean_and_sd(cv_config, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["cv", str(cv_config), "--folds", "3", "--json", "--store", str(store), "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["folds"] == 3 and result["cv_id"].startswith("cv-")

    stored = versions(store)
    assert [v.number for v in stored] == [1, 2, 3]
    for i, v in enumerate(stored):
        assert v.lineage["cv"] == {"id": result["cv_id"], "fold": i, "folds": 3}
        assert v.lineage["training"]["data"]["split"]["fold"] == i
        assert result["results"][i]["ref"] == f"cvtiny@{v.number}"
        assert v.lineage["data"]["sizes"]["train"] + v.lineage["data"]["sizes"]["dev"] == 120
    for split in ("dev", "test"):
        for metric in ("accuracy", "f1_macro"):
            values = [fold["metrics"][split][metric] for fold in result["results"]]
            got = result["summary"][split][metric]
            assert got["values"] == values
            assert got["mean"] == pytest.approx(np.mean(values))
            assert got["sd"] == pytest.approx(np.std(values, ddof=1))

    # The same command again trains nothing: every fold is found in the store. With --final it
    # trains one more adapter, on all folds' rows, for the folds' mean best epoch count.
    assert main(["cv", str(cv_config), "--folds", "3", "--final", "--json", "--store", str(store), "-q"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["cv_id"] == result["cv_id"]
    assert all(fold["reused"] for fold in again["results"])
    assert again["summary"] == result["summary"]
    stored = versions(store)
    assert [v.number for v in stored] == [1, 2, 3, 4]
    final = stored[-1].lineage
    epochs = [fold["best_epochs"] for fold in again["results"]]
    assert final["cv"]["fold"] == "all" and final["cv"]["final"] is True
    assert final["cv"]["epochs"] == pytest.approx(np.mean(epochs), abs=1e-3)
    assert final["training"]["training"]["epochs"] == pytest.approx(np.mean(epochs), abs=1e-3)
    assert final["data"]["sizes"]["train"] == 120
    assert again["final"]["ref"] == "cvtiny@4"

    # The text output: a table per split with a mean ± sd row.
    assert main(["cv", str(cv_config), "--folds", "3", "--store", str(store), "-q"]) == 0
    text = capsys.readouterr().out
    assert "3-fold cross-validation — dev" in text and "mean ± sd" in text and "already stored" in text
    assert len(versions(store)) == 4


@pytest.mark.parametrize("folds", ["1", "0", "-2", "three"])
def test_a_bad_folds_value_is_a_usage_error_and_stores_nothing(cv_config, tmp_path, capsys, folds):
    store = tmp_path / "store"
    code = main(["cv", str(cv_config), "--folds", folds, "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error:" in err and "hint:" in err and "folds" in err
    assert "Traceback" not in err
    assert not (store / "store.db").exists() or versions(store) == []


def test_cv_python_api_refuses_bad_folds_before_anything_loads(cv_config):
    import adapters.api

    with pytest.raises(ValueError):
        adapters.api.cross_validate(cv_config, 1)
    with pytest.raises(ConfigError):
        adapters.api.cross_validate(cv_config, 3, overrides=["data.split.seed=notanumber"])
