"""Shared helpers for the merge and ensemble tests (no tests here): tiny trained adapters, trained
once per session and perturbed apart (see support.runtime), stored into each test's store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.runtime import CHAT, train


def stored(path: Path, name: str, store_root: Path | None = None) -> str:
    """Put the adapter directory ``path`` into the store (default: this test's) as ``name``."""
    from adapters_store import Store

    lineage = json.loads((path / "adapter_manager.json").read_text())
    with Store(store_root) as s:
        return s.put(path, name, lineage=lineage, metrics=lineage.get("metrics")).ref


@pytest.fixture(scope="session")
def merge_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("merge-adapters")


@pytest.fixture(scope="session")
def gen_loras(merge_root, tiny_llama, chat_jsonl) -> dict[str, Path]:
    """Causal-LM LoRA adapters on tiny Llama: A and C of rank 8 (same targets), B of rank 4 on
    more modules."""
    kw = {"task": "causal-lm", "data": {"source": str(chat_jsonl), **CHAT}}
    return {
        "A": train(merge_root, "merge-gen-a", tiny_llama, chat_jsonl, **kw),
        "C": train(merge_root, "merge-gen-c", tiny_llama, chat_jsonl, **kw),
        "B": train(merge_root, "merge-gen-b", tiny_llama, chat_jsonl, lora={"r": 4, "alpha": 8,
                   "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]}, **kw),
        "P": train(merge_root, "merge-gen-p", tiny_llama, chat_jsonl, method="prefix",
                   prefix={"num_virtual_tokens": 4}, **kw),
    }


@pytest.fixture(scope="session")
def bert_classifiers(merge_root, tiny_bert, sentiment_csv) -> dict[str, Path]:
    """Sentiment classifiers on tiny BERT: two LoRA and two prefix adapters (3 virtual tokens). The
    LoRA targets include ``dense``, as configs/rt-minilm-lora.yaml does: a name that also matches
    the pooler, which belongs to the head and must get no LoRA."""
    prefix = {"method": "prefix", "prefix": {"num_virtual_tokens": 3}}
    lora = {"lora": {"target_modules": ["query", "value", "dense"]}}
    return {
        "lora1": train(merge_root, "merge-bert-lora-1", tiny_bert, sentiment_csv, **lora),
        "lora2": train(merge_root, "merge-bert-lora-2", tiny_bert, sentiment_csv, **lora),
        "prefix1": train(merge_root, "merge-bert-prefix-1", tiny_bert, sentiment_csv, **prefix),
        "prefix2": train(merge_root, "merge-bert-prefix-2", tiny_bert, sentiment_csv, **prefix),
    }


@pytest.fixture(scope="session")
def llama_classifier(merge_root, tiny_llama, sentiment_csv) -> Path:
    return train(merge_root, "merge-llama-cls", tiny_llama, sentiment_csv)


@pytest.fixture(scope="session")
def llama_prefix_classifier(merge_root, tiny_llama, sentiment_csv) -> Path:
    return train(merge_root, "merge-llama-cls-prefix", tiny_llama, sentiment_csv, method="prefix",
                 prefix={"num_virtual_tokens": 5})
