"""Token classification that must learn: a tiny tagging task where an all-"O" tagger scores an
entity F1 of exactly 0, so a passing run has found the entities (not only the majority tag)."""

import json
import random

import pytest

import adapters

from support.config import tiny_config

PEOPLE = ["alice", "bob", "carol", "dave"]
PLACES = ["paris", "london", "rome", "oslo"]
VERBS = ["visited", "left", "loved", "saw"]


FILLER = VERBS + ["today", "and", "then", "the"]


@pytest.fixture(scope="module")
def tagging_jsonl(tmp_path_factory):
    """Sentences of 3-6 words, each word drawn at random from people, places and filler words at
    a random position: only the word itself decides its tag (not its position or neighbours)."""
    rng = random.Random(0)
    rows = []
    for _ in range(240):
        words = [rng.choice([PEOPLE, PLACES, FILLER, FILLER]) for _ in range(rng.randint(3, 6))]
        tokens = [rng.choice(kind) for kind in words]
        tags = ["B-PER" if t in PEOPLE else "B-LOC" if t in PLACES else "O" for t in tokens]
        rows.append({"tokens": tokens, "tags": tags})
    path = tmp_path_factory.mktemp("tagging") / "tagging.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("quant", ["none", "4bit"])
def test_lora_tagger_finds_the_entities(tiny_bert, tagging_jsonl, quant):
    cfg = tiny_config(tiny_bert, tagging_jsonl, task="token-classification", quant=quant,
                      data={"source": str(tagging_jsonl), "tokens_column": "tokens", "tags_column": "tags",
                            "max_length": 16},
                      training={"epochs": 6, "learning_rate": 2e-2, "batch_size": 16, "seed": 0})
    result = adapters.train(cfg, store=False)
    test = result.metrics["test"]
    # All-"O" predictions have no entity: precision, recall and F1 are 0.
    assert test["f1"] > 0.8, test
    # The saved adapter, loaded back, tags a sentence it never saw.
    tags = adapters.load(None, result.output_dir).tag([["then", "rome", "saw", "dave", "oslo"]])[0]
    assert tags == [("then", "O"), ("rome", "B-LOC"), ("saw", "O"), ("dave", "B-PER"), ("oslo", "B-LOC")]
