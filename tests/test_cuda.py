"""The CUDA path, on machines with a GPU (skipped elsewhere, CI included): 4-bit NF4 training with
bf16 compute, and the engine's mixed batches on the GPU, row by row against each adapter alone
and against plain peft on the same 4-bit base on the GPU. bf16 rounds at ~4e-3, so probabilities
and log-probabilities agree to 2e-2 here, and the greedy tokens exactly."""

from __future__ import annotations

import pytest
import torch

from adapters.runtime import Engine

from support.config import tiny_config
from support.runtime import PROMPTS, reference_classify, reference_generate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
BF16_TOL = 2e-2


def test_4bit_training_runs_on_the_gpu_with_bf16_compute(tiny_bert, sentiment_csv, tmp_path):
    import bitsandbytes as bnb

    import adapters

    cfg = tiny_config(tiny_bert, sentiment_csv, quant="4bit", device="cuda", training={"epochs": 2})
    result = adapters.train(cfg, output=tmp_path / "out")
    assert 0 <= result.metrics["test"]["accuracy"] <= 1
    loaded = adapters.load(None, result.output_dir, device="cuda")
    quantized = [m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all(m.weight.device.type == "cuda" for m in quantized)
    assert {m.compute_dtype for m in quantized} == {torch.bfloat16}
    assert quantized[0].weight.quant_state.quant_type == "nf4"
    prediction = loaded.predict(["a fine film"])[0]
    assert prediction["label"] in ("fresh", "rotten")


def test_mixed_generation_on_the_gpu_equals_each_adapter_alone(tiny_llama, gen_adapters):
    engine = Engine(str(tiny_llama), quant="4bit", device="cuda")
    assert engine.device.type == "cuda" and engine.dtype == torch.bfloat16
    rows = [str(gen_adapters[k]) for k in ("A", "B", "P", "Q")] + [None, str(gen_adapters["A"])]
    batch = engine.generate(PROMPTS, rows, max_new_tokens=6, logprobs=True)
    for prompt, adapter, got in zip(PROMPTS, rows, batch):
        alone = engine.generate([prompt], [adapter], max_new_tokens=6, logprobs=True)[0]
        assert got.token_ids == alone.token_ids, f"row for {adapter}"
        assert max(abs(a - b) for a, b in zip(got.logprobs, alone.logprobs)) < BF16_TOL
        tokens, logprobs = reference_generate(tiny_llama, adapter, prompt, 6, "4bit", device="cuda")
        assert got.token_ids == tokens, f"row for {adapter} against plain peft"
        assert max(abs(a - b) for a, b in zip(got.logprobs, logprobs)) < BF16_TOL


def test_mixed_classification_on_the_gpu_equals_peft(tiny_bert, bert_cls_adapters):
    engine = Engine(str(tiny_bert), quant="4bit", device="cuda")
    texts = ["a gripping drama", "dull, lifeless and predictable mess of a movie", "fine", "what a film"]
    rows = [str(bert_cls_adapters[k]) for k in ("lora", "prefix", "lora", "prefix")]
    for text, adapter, got in zip(texts, rows, engine.classify(texts, rows)):
        alone = engine.classify([text], adapter=adapter)[0]
        reference = reference_classify(adapter, text, "4bit", device="cuda")
        for label, p in reference.items():
            assert abs(got["probabilities"][label] - alone["probabilities"][label]) < BF16_TOL
            assert abs(got["probabilities"][label] - p) < BF16_TOL
