"""Relative paths in a config file start from the file's folder, whatever the current directory,
and the stored lineage holds them absolute, so `adapters eval`, the TUI's Retrain and `--configs`
work from anywhere."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from adapters.config import load_config
from adapters_store import Store

ADAPTERS = str(Path(sys.executable).with_name("adapters"))


def _project(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> Path:
    """my-project/configs/tiny.yaml naming ../data/reviews.csv and ../models/bert."""
    root = tmp_path / "my-project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "reviews.csv").write_bytes(sentiment_csv.read_bytes())
    (root / "models").mkdir()
    (root / "models" / "bert").symlink_to(tiny_bert, target_is_directory=True)
    (root / "configs").mkdir()
    config = {"name": "tiny", "base": "../models/bert", "task": "classification", "method": "lora", "quant": "none",
              "data": {"source": "../data/reviews.csv", "text_column": "review", "label_column": "sentiment",
                       "max_length": 32},
              "training": {"epochs": 1, "batch_size": 16, "learning_rate": 5e-3, "seed": 0}}
    (root / "configs" / "tiny.yaml").write_text(yaml.safe_dump(config))
    return root


def test_relative_paths_start_from_the_config_file(tmp_path, tiny_bert, sentiment_csv, monkeypatch):
    root = _project(tmp_path, tiny_bert, sentiment_csv)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(root / "configs" / "tiny.yaml")
    assert cfg.data.source == str((root / "data" / "reviews.csv").resolve())
    assert cfg.base == str((root / "models" / "bert").resolve())
    # Built-in names and hub ids stay as written; --set paths start from the current directory.
    (elsewhere / "other.csv").write_bytes(sentiment_csv.read_bytes())
    cfg = load_config(root / "configs" / "tiny.yaml", ["base=minilm-l6", "data.source=other.csv"])
    assert cfg.base == "minilm-l6" and cfg.data.source == str(elsewhere / "other.csv")
    assert load_config(root / "configs" / "tiny.yaml", ["data.source=builtin:rotten-tomatoes"]).data.source \
        == "builtin:rotten-tomatoes"


def test_train_from_another_directory_then_eval_from_a_third(tmp_path, tiny_bert, sentiment_csv):
    root = _project(tmp_path, tiny_bert, sentiment_csv)
    env = {**os.environ, "ADAPTERS_HOME": str(tmp_path / "home")}
    run_from = tmp_path / "a"
    run_from.mkdir()
    out = subprocess.run([ADAPTERS, "train", str(root / "configs" / "tiny.yaml"), "-q"], cwd=run_from, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    version = Store(tmp_path / "home").resolve("tiny")
    csv = str((root / "data" / "reviews.csv").resolve())
    assert version.lineage["training"]["data"]["source"] == csv and version.lineage["data"]["source"] == csv
    third = tmp_path / "b"
    third.mkdir()
    # eval with no --data re-reads the data the version was trained on, from its lineage.
    out = subprocess.run([ADAPTERS, "eval", "tiny"], cwd=third, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "accuracy" in out.stdout
