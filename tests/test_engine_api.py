"""The public Engine API resolves store refs and agrees with adapters.load, adapter by adapter."""

import pytest

import adapters
from adapters.runtime import UnknownAdapterError

from support.config import tiny_config


def test_engine_serves_stored_refs_like_load(tiny_bert, sentiment_csv):
    lora = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="eng-lora"))
    prefix = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="eng-prefix", method="prefix"))
    engine = adapters.Engine(str(tiny_bert), quant="none")
    texts = ["a fine film", "a dull mess", "a fine film", "a dull mess"]
    mixed = engine.classify(texts, adapters=[lora.ref, prefix.ref, prefix.ref, lora.ref])
    for ref, row, text in zip([lora.ref, prefix.ref, prefix.ref, lora.ref], mixed, texts):
        alone = adapters.load(None, ref).predict([text])[0]
        assert row["label"] == alone["label"]
        for label, p in alone["probabilities"].items():
            assert abs(row["probabilities"][label] - p) < 1e-5
    same = engine.classify(texts[:2], adapter=lora.ref)
    assert [r["label"] for r in same] == [mixed[0]["label"], mixed[3]["label"]]


def test_engine_unknown_ref(tiny_bert):
    engine = adapters.Engine(str(tiny_bert), quant="none")
    with pytest.raises(UnknownAdapterError):
        engine.load("never-trained@1")
