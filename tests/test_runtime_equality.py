"""Mixed batches equal single-adapter peft, row by row: LoRA A, LoRA B, prefix P, prefix Q (another
number of virtual tokens) and the bare base in one forward pass per step, with left padding."""

from __future__ import annotations

import pytest
import torch

from adapters.runtime import Engine

from support.runtime import PROMPTS, reference_classify, reference_generate

# Each comparison names the compute dtype it runs in. In float32, rows agree with peft to ~5e-7 in
# log-probabilities, unquantized and 4-bit alike (the same dequantized weights meet the same inputs):
# 1e-5 and 1e-4 are the bounds we state. In bfloat16 (what "auto" picks on GPUs and on CPUs with
# AVX512-BF16) the batch's shape changes the rounding of every matmul: rows agree to ~4e-3, about one
# bf16 step (2**-8) of a logit, and 3e-2 is the bound. A row routed to the wrong adapter misses by ~0.1-1.
TOL = {"none": 1e-5, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}
# (quant, compute dtype): exact on every CPU, and the dtype this machine's auto choice runs in.
CASES = [("none", "float32"), ("4bit", "float32"), ("4bit", "auto")]
NEW_TOKENS = 8


def tolerance(engine: Engine) -> float:
    return TOL["none"] if engine.quant == "none" else TOL[engine.plan.compute_dtype]


@pytest.fixture(scope="module")
def llama_engine(tiny_llama):
    return Engine(str(tiny_llama), quant="none", device="cpu")


def _mixed_rows(gen_adapters):
    rows = [gen_adapters["A"], gen_adapters["B"], gen_adapters["P"], gen_adapters["Q"], None, gen_adapters["P"]]
    return [str(r) if r else None for r in rows]


@pytest.mark.parametrize("quant, dtype", CASES)
def test_mixed_generation_rows_equal_single_adapter_peft(quant, dtype, tiny_llama, gen_adapters, llama_engine):
    engine = (llama_engine if quant == "none"
              else Engine(str(tiny_llama), quant=quant, device="cpu", compute_dtype=dtype))
    rows = _mixed_rows(gen_adapters)
    results = engine.generate(PROMPTS, rows, max_new_tokens=NEW_TOKENS, logprobs=True)
    refs = {}
    for prompt, adapter, result in zip(PROMPTS, rows, results):
        tokens, logprobs = reference_generate(tiny_llama, adapter, prompt, NEW_TOKENS, quant, compute_dtype=dtype)
        refs[adapter] = tokens
        assert result.token_ids == tokens, f"row for {adapter}"
        assert max(abs(a - b) for a, b in zip(result.logprobs, logprobs)) < tolerance(engine)
        assert result.finish_reason in ("length", "stop") and result.tokens == len(tokens)
    # The adapters matter: otherwise equality would prove nothing about routing rows.
    same_prompt = engine.generate([PROMPTS[0]] * 5, rows[:5], max_new_tokens=NEW_TOKENS, logprobs=True)
    assert len({tuple(round(x, 3) for x in r.logprobs) for r in same_prompt}) == 5


def test_mixed_batch_is_padding_and_neighbour_invariant(gen_adapters, llama_engine):
    rows = _mixed_rows(gen_adapters)
    batch = llama_engine.generate(PROMPTS, rows, max_new_tokens=NEW_TOKENS, logprobs=True)
    for i in (2, 3, 4):  # prefix rows and the base row, each alone
        alone = llama_engine.generate([PROMPTS[i]], [rows[i]], max_new_tokens=NEW_TOKENS, logprobs=True)[0]
        assert alone.token_ids == batch[i].token_ids
        assert max(abs(a - b) for a, b in zip(alone.logprobs, batch[i].logprobs)) < 1e-5


def test_decoder_classification_rows_equal_peft(llama_engine, llama_cls_adapters):
    texts = ["a gripping drama", "dull, lifeless and predictable mess of a movie", "fine",
             "the film is a gripping and beautifully acted drama"]
    rows = [str(llama_cls_adapters[k]) for k in ("lora", "prefix", "prefix", "lora")]
    out = llama_engine.classify(texts, rows)
    for text, adapter, got in zip(texts, rows, out):
        ref = reference_classify(adapter, text, "none")
        assert got["probabilities"].keys() == ref.keys() == {"fresh", "rotten"}
        assert max(abs(got["probabilities"][k] - ref[k]) for k in ref) < 1e-5
        assert got["label"] == max(ref, key=ref.get)


@pytest.mark.parametrize("quant, dtype", CASES)
def test_encoder_classification_rows_equal_peft(quant, dtype, tiny_bert, bert_cls_adapters):
    engine = Engine(str(tiny_bert), quant=quant, device="cpu", compute_dtype=dtype)
    texts = ["a gripping drama", "dull, lifeless and predictable mess of a movie", "fine", "what a film"]
    rows = [str(bert_cls_adapters[k]) for k in ("lora", "prefix", "lora", "prefix")]
    out = engine.classify(texts, rows)
    for text, adapter, got in zip(texts, rows, out):
        ref = reference_classify(adapter, text, quant, compute_dtype=dtype)
        assert max(abs(got["probabilities"][k] - ref[k]) for k in ref) < tolerance(engine)
    with pytest.raises(Exception, match="encoder"):
        engine.generate(["hi"], [None])


def test_classification_and_generation_share_one_body(llama_engine, gen_adapters, llama_cls_adapters):
    llama_engine.classify(["a fine film"], [str(llama_cls_adapters["lora"])])
    llama_engine.generate(["hello"], [str(gen_adapters["A"])], max_new_tokens=2)
    infos = {i.path: i for i in llama_engine.adapters()}
    head = next(e.resident.head for e in llama_engine._cache.entries.values() if e.resident.head)
    # The head module holds only the classifier (64 x 2 here), no copy of the body.
    assert sum(p.numel() for p in head.model.parameters()) == 64 * 2
    assert {infos[str(llama_cls_adapters["lora"])].task, infos[str(gen_adapters["A"])].task} == {
        "classification", "causal-lm"}
    with pytest.raises(Exception, match="classification adapter"):
        llama_engine.generate(["hi"], [str(llama_cls_adapters["lora"])])
    with pytest.raises(Exception, match="not a classification adapter"):
        llama_engine.classify(["hi"], [str(gen_adapters["A"])])


def test_stream_pieces_join_to_the_generated_text(llama_engine, gen_adapters):
    adapter = str(gen_adapters["B"])
    full = llama_engine.generate([PROMPTS[0]], [adapter], max_new_tokens=10)[0]
    stream = llama_engine.stream(PROMPTS[0], adapter, max_new_tokens=10)
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces) == full.text
    assert (stream.finish_reason, stream.tokens) == (full.finish_reason, full.tokens)
    # A stop string cuts the text before it, in both APIs.
    if len(full.text) > 3:
        stop = full.text[2:4]
        cut = llama_engine.generate([PROMPTS[0]], [adapter], max_new_tokens=10, stop=[stop])[0]
        assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.find(stop)]
        assert "".join(llama_engine.stream(PROMPTS[0], adapter, max_new_tokens=10, stop=[stop])) == cut.text


def test_seeded_sampling_is_reproducible_and_batch_independent(llama_engine, gen_adapters):
    rows = [str(gen_adapters["A"]), str(gen_adapters["Q"]), None]
    kw = {"max_new_tokens": 8, "temperature": 1.5, "top_p": 0.9}
    first = llama_engine.generate(PROMPTS[:3], rows, seed=[1, 2, 3], **kw)
    again = llama_engine.generate(PROMPTS[:3], rows, seed=[1, 2, 3], **kw)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    alone = llama_engine.generate([PROMPTS[1]], [rows[1]], seed=2, **kw)[0]
    assert alone.token_ids == first[1].token_ids
    other = llama_engine.generate(PROMPTS[:3], rows, seed=[4, 5, 6], **kw)
    assert [r.token_ids for r in other] != [r.token_ids for r in first]
    streamed = "".join(llama_engine.stream(PROMPTS[1], rows[1], seed=2, **kw))
    assert streamed == alone.text
    # A temperature or top_p too small to compute with is greedy decoding, not NaNs.
    greedy = llama_engine.generate(PROMPTS[:2], rows[:2], max_new_tokens=6)
    tiny = llama_engine.generate(PROMPTS[:2], rows[:2], max_new_tokens=6, temperature=[1e-30, 1.0],
                                 top_p=[1.0, 1e-9], seed=7)
    assert [r.token_ids for r in tiny] == [r.token_ids for r in greedy]


def test_base_rows_are_the_bare_base(llama_engine, tiny_llama, gen_adapters):
    llama_engine.load(str(gen_adapters["A"]))
    out = llama_engine.generate([PROMPTS[1], PROMPTS[1]], [None, "__base__"], max_new_tokens=4, logprobs=True)
    tokens, logprobs = reference_generate(tiny_llama, None, PROMPTS[1], 4, "none")
    assert out[0].token_ids == out[1].token_ids == tokens
    assert torch.allclose(torch.tensor(out[0].logprobs), torch.tensor(logprobs), atol=1e-5)
