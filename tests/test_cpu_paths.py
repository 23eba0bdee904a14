"""One CPU path for 4-bit layers whatever the CPU: bitsandbytes never repacks a layer's weight for
its AVX512-BF16 inference kernel in a model the project builds (see ``adapters.base.device``).

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
from adapters.base import device as quant
from adapters.base.device import cpu_has_fast_bf16, is_repacked, keep_4bit_layout, plan_device
from adapters.base.loading import load_base_model
from adapters.base.resolve import resolve_base
from adapters.runtime import Engine
from adapters.training.runs import read_events

from support.config import tiny_config


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


AVX2_ONLY = "flags : fpu sse2 avx avx2 fma bmi2"
AVX512_BF16 = AVX2_ONLY + " avx512f avx512_bf16"
AMX = AVX2_ONLY + " amx_bf16 amx_tile amx_int8"


def test_cpu_kind_is_read_from_the_flags():
    assert not cpu_has_fast_bf16(AVX2_ONLY)
    assert cpu_has_fast_bf16(AVX512_BF16) and cpu_has_fast_bf16(AMX)
    assert not cpu_has_fast_bf16("flags : avx512_bf16x")  # whole flags, not substrings


@pytest.mark.parametrize("cpuinfo, expected", [(AVX2_ONLY, torch.float32), (AVX512_BF16, torch.bfloat16)],
                         ids=["avx2-only", "avx512-bf16"])
def test_each_cpu_kind_gets_its_compute_dtype_and_one_layout(repacking_cpu, monkeypatch, cpuinfo, expected,
                                                            tiny_bert):
    """What each CPU kind runs, pinned on whichever CPU the suite meets: float32 compute on AVX2-only
    CPUs (bf16 is 3-15x slower there), bf16 on AVX512-BF16, and bitsandbytes' own 4-bit layout on
    both (bitsandbytes is told it could repack)."""
    monkeypatch.setattr(quant, "cpu_has_fast_bf16", lambda: cpu_has_fast_bf16(cpuinfo))
    plan = plan_device("cpu")
    assert plan.compute_dtype == expected
    model, _ = load_base_model(resolve_base(str(tiny_bert)), "classification", "4bit", plan, ["fresh", "rotten"])
    assert {layer.compute_dtype for layer in four_bit_layers(model)} == {expected}
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[101, 2023, 102]])).logits
    assert torch.isfinite(logits).all()
    assert_never_repacks(model)


def test_no_hub_kernel_warning_on_import():
    """bitsandbytes warns at import on AVX512-BF16 CPUs that it cannot fetch a hub kernel the
    project never uses: a user sees nothing of it. The warning is emitted by hand as well, so the
    test means the same on a CPU where bitsandbytes would not warn."""
    import subprocess
    import sys

    code = ("import logging, adapters, bitsandbytes\n"
            "logging.getLogger('bitsandbytes.backends.cpu.ops').warning("
            "'Failed to load CPU gemm_4bit_forward from kernels-community')\n"
            "logging.getLogger('bitsandbytes').warning('other bitsandbytes warnings still show')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "kernels-community" not in out.stderr, out.stderr
    assert "other bitsandbytes warnings still show" in out.stderr
