"""What resident adapters cost the engine, and that the cache's max_bytes counts exactly that: LoRA
matrices as the bank holds them (rank bucket, compute dtype), prefixes and heads; freed when an
adapter leaves, with the layer hooks; adapters of mixed ranks exact row by row in one batch."""

from __future__ import annotations

import pytest
import torch

from adapters.runtime import Engine
from adapters.runtime.requests import GenerationRequest

PROMPT = "the cat sat on the mat and looked at the dog"


def _peft_lora(base, out, r: int, seed: int, **options):
    """A causal-LM LoRA adapter of rank ``r`` saved by plain peft, with random A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False, **options)
    get_peft_model(model, config).save_pretrained(out)
    return out


def _file_lora_bytes(adapter) -> int:
    from safetensors.torch import load_file

    return sum(t.nbytes for k, t in load_file(str(adapter / "adapter_model.safetensors")).items() if ".lora_" in k)


@pytest.fixture(scope="module")
def ranked(tiny_llama, tmp_path_factory):
    """Plain peft LoRA adapters of ranks 2, 12 and 64 (fp32 files)."""
    root = tmp_path_factory.mktemp("ranked")
    return {r: _peft_lora(tiny_llama, root / f"r{r}", r, seed=r) for r in (2, 12, 64)}


def _prompt_logprobs(base, adapter, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        logits = model.eval()(input_ids=torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)


def test_resident_bytes_are_the_matrices_as_held(tiny_llama, ranked, gen_adapters):
    """fp32: a power-of-two rank costs its file's LoRA bytes, rank 12 is held at 16; a 4-bit base
    computing in bf16 halves both; a prefix costs its virtual key/values in the compute dtype. The
    bank holds nothing more."""
    from safetensors.torch import load_file

    fp32 = Engine(str(tiny_llama), quant="none", device="cpu", compute_dtype="float32")
    assert fp32.load(str(ranked[2])).bytes == _file_lora_bytes(ranked[2])
    assert fp32.load(str(ranked[12])).bytes == _file_lora_bytes(ranked[12]) * 16 // 12
    assert fp32.load(str(ranked[64])).bytes == _file_lora_bytes(ranked[64])
    prefix = load_file(str(gen_adapters["P"] / "adapter_model.safetensors"))["prompt_embeddings"]
    assert fp32.load(str(gen_adapters["P"])).bytes == prefix.numel() * 4
    lora = [i for i in fp32.adapters() if i.method == "lora"]
    assert fp32.lora.nbytes() == sum(i.bytes for i in lora)

    bf16 = Engine(str(tiny_llama), quant="4bit", device="cpu", compute_dtype="bfloat16")
    assert bf16.load(str(ranked[2])).bytes == _file_lora_bytes(ranked[2]) // 2
    assert bf16.load(str(gen_adapters["P"])).bytes == prefix.numel() * 2
    held = {t.dtype for layer in bf16.lora.layers.values() for pair in layer.matrices.values() for t in pair}
    assert held == {torch.bfloat16}


def test_a_high_rank_adapter_does_not_pad_the_others(tiny_llama, ranked):
    alone = Engine(str(tiny_llama), quant="none", device="cpu").load(str(ranked[2])).bytes
    engine = Engine(str(tiny_llama), quant="none", device="cpu")
    engine.load(str(ranked[64]))
    assert engine.load(str(ranked[2])).bytes == alone
    shapes = {pair[0].shape[1] for layer in engine.lora.layers.values() for pair in layer.matrices.values()}
    assert shapes == {2, 64}


def test_max_bytes_counts_the_bank_and_leaving_frees_it(tiny_llama, ranked):
    """A limit of one rank-64 adapter's bytes holds it or the two small ones, never all three;
    unloading frees the matrices and removes every hook the bank put on the model."""
    probe = Engine(str(tiny_llama), quant="none", device="cpu")
    big, small = probe.load(str(ranked[64])).bytes, probe.load(str(ranked[2])).bytes
    engine = Engine(str(tiny_llama), quant="none", device="cpu", max_bytes=big)
    engine.load(str(ranked[2]))
    engine.load(str(ranked[12]))
    engine.load(str(ranked[64]))  # evicts both smaller ones
    assert [i.ref for i in engine.adapters()] == [str(ranked[64])]
    assert engine.lora.nbytes() == big > small
    hooked = [name for name, m in engine.model.named_modules() if m._forward_hooks]
    assert hooked and all(name.endswith(("q_proj", "v_proj", "down_proj")) for name in hooked)
    engine.unload(str(ranked[64]))
    assert engine.lora.nbytes() == 0 and not engine.lora.layers
    assert not [name for name, m in engine.model.named_modules() if m._forward_hooks]


def test_mixed_ranks_in_one_batch_equal_plain_peft_row_by_row(tiny_llama, ranked, gen_adapters):
    """Rows of three rank buckets, a prefix row and a base row share one forward pass; each row's
    prompt log-probabilities equal plain peft's for its adapter alone."""
    engine = Engine(str(tiny_llama), quant="none", device="cpu", compute_dtype="float32")
    ids = engine.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    rows = [ranked[2], ranked[64], None, ranked[12], gen_adapters["P"], ranked[2]]
    requests = [GenerationRequest(PROMPT, str(a) if a else None, max_new_tokens=1, raw=True, echo=True,
                                  logprobs=True, prompt_ids=ids[: len(ids) - i]) for i, a in enumerate(rows)]
    for request, result, adapter in zip(requests, engine.run(requests), rows):
        got = torch.tensor([lp for _, lp, _ in result.prompt_logprobs[1:]])
        assert torch.allclose(got, _prompt_logprobs(tiny_llama, adapter, list(request.prompt_ids)), atol=1e-4), \
            adapter
