"""One CPU path for 4-bit layers whatever the CPU: bitsandbytes never repacks a layer's weight for
its AVX512-BF16 inference kernel in a model the project builds (see ``adapters.quant``).

Every test here makes bitsandbytes believe the CPU has AVX512-BF16 (``has_avx512bf16`` is read when
a ``Linear4bit`` is built), so the repacking would happen on an AVX2 machine too if the project did
not turn it off: each test can fail on either CPU kind. On an AVX512-BF16 machine the flag is true
anyway and the patch changes nothing."""

from __future__ import annotations

import bitsandbytes.nn.modules as bnb_modules
import pytest
import torch
from bitsandbytes.nn import Linear4bit

import adapters
from adapters.quant import is_repacked, keep_4bit_layout
from adapters.runlog import read_events
from adapters.runtime import Engine
from conftest import tiny_config
from test_runtime_support import bert_cls_adapters, runtime_root  # noqa: F401 - fixtures


@pytest.fixture
def repacking_cpu(monkeypatch):
    """Layers built from here on would repack on their first eval-mode, no-grad forward."""
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)


def four_bit_layers(model) -> list[Linear4bit]:
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert layers, "the model has no 4-bit layers: the test would prove nothing"
    return layers


def assert_never_repacks(model) -> None:
    for layer in four_bit_layers(model):
        assert layer.support_avx512bf16_for_cpu is False
        assert not is_repacked(layer)


def test_plain_bitsandbytes_repacks_and_changes_the_output(repacking_cpu):
    """The premise: left alone, a layer's first eval-mode forward repacks it and its output moves
    (so the other tests watch a real switch); with keep_4bit_layout applied first, eval mode gives
    exactly the train-mode output."""
    torch.manual_seed(0)
    dense = torch.nn.Linear(64, 96)
    x = torch.randn(5, 64)

    def layer(keep: bool) -> Linear4bit:
        four_bit = Linear4bit(64, 96, compute_dtype=torch.bfloat16, quant_type="nf4")
        four_bit.load_state_dict(dense.state_dict())
        four_bit = four_bit.to("cpu")  # quantizes
        if keep:
            assert keep_4bit_layout(torch.nn.Sequential(four_bit)) == 1
        return four_bit

    with torch.no_grad():
        plain, kept = layer(keep=False), layer(keep=True)
        want = plain.train()(x)  # train mode never repacks
        assert torch.equal(kept.eval()(x), want) and not is_repacked(kept)
        repacked = plain.eval()(x)
    assert is_repacked(plain) and not torch.equal(repacked, want)


def test_loaded_adapter_never_repacks(repacking_cpu, bert_cls_adapters):
    loaded = adapters.load(None, bert_cls_adapters["lora"], quant="4bit", device="cpu")
    assert_never_repacks(loaded.model)
    out = loaded.predict(["a gripping drama", "a dull mess"])
    assert all(o["label"] in ("fresh", "rotten") for o in out)
    assert_never_repacks(loaded.model)


def test_engine_never_repacks(repacking_cpu, tiny_bert, bert_cls_adapters):
    engine = Engine(str(tiny_bert), quant="4bit", device="cpu")
    assert_never_repacks(engine.model)
    engine.classify(["a gripping drama", "fine"], [str(bert_cls_adapters["lora"]), str(bert_cls_adapters["prefix"])])
    assert_never_repacks(engine.model)


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_4bit_training_goes_on_after_a_mid_run_evaluation(repacking_cpu, method, tiny_bert, sentiment_csv,
                                                           tmp_path):
    """The crash users met: the dev evaluation after step 2 repacked the layers, and step 3's
    backward then failed in bitsandbytes. Here training runs past two evaluations."""
    training = {"max_steps": 4, "eval_every": 2, "batch_size": 8, "learning_rate": 1e-2, "seed": 0}
    cfg = tiny_config(tiny_bert, sentiment_csv, quant="4bit", method=method, training=training)
    result = adapters.train(cfg, output=tmp_path / "out", run_dir=tmp_path / "run")
    evals = [e["step"] for e in read_events(result.run_dir / "events.jsonl") if e["event"] == "eval"]
    assert evals[:2] == [2, 4] and result.metrics["steps"] == 4
    loaded = adapters.load(None, result.output_dir)
    assert_never_repacks(loaded.model)
