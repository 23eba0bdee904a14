"""Tiny training configs for the tests: a small model, one epoch, short sequences."""

from __future__ import annotations

from pathlib import Path


def tiny_config(base: Path | str, data: Path | str, /, **over) -> dict:
    """A small training config as a mapping; keyword overrides merge one level deep."""
    cfg = {
        "name": "tiny",
        "base": str(base),
        "task": "classification",
        "method": "lora",
        "quant": "none",
        "data": {"source": str(data), "text_column": "review", "label_column": "sentiment", "max_length": 64},
        "training": {"epochs": 1, "batch_size": 16, "learning_rate": 5e-3, "log_every": 2, "seed": 0},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg
