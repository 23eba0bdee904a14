"""Ensembles at inference (``ensemble:a@1+b@2``): a classifier ensemble's probabilities are the
(weighted) mean of its members', a generation ensemble decodes from the mean of its members'
next-token distributions; both run as member rows of one mixed batch next to ordinary rows."""

from __future__ import annotations

import pytest
import torch

import adapters
from adapters.runtime import UnknownAdapterError
from adapters.runtime.ensemble import EnsembleError, ensemble_ref, parse

from support.merge import stored

TEXTS = ["a gripping, beautifully acted film", "a dull mess", "john flew to paris", "fine"]
PROMPTS = ["what is your favourite food?", "hello", "where did john fly?"]


def test_parse_ensemble_refs():
    e = parse("ensemble:a@1+b@2")
    assert e.members == ("a@1", "b@2") and e.weights == (0.5, 0.5)
    e = parse("ensemble:a@prod*3 + sha256:0123abcd*1")
    assert e.members == ("a@prod", "sha256:0123abcd") and e.weights == (0.75, 0.25)
    assert parse(ensemble_ref(["x", "y@2"], [0.7, 0.3])).weights == pytest.approx((0.7, 0.3))
    for bad in ("ensemble:", "ensemble:a+", "ensemble:a*x+b", "ensemble:a*-1+b", "ensemble:a*0+b*0",
                "ensemble:a+ensemble:b"):
        with pytest.raises(EnsembleError) as info:
            parse(bad)
        assert info.value.hint


def mean_probabilities(rows: list[dict], weights: list[float]) -> dict[str, float]:
    return {label: sum(w * r["probabilities"][label] for r, w in zip(rows, weights))
            for label in rows[0]["probabilities"]}


def test_classifier_ensemble_is_the_mean_of_its_members_in_one_batch(bert_classifiers, tiny_bert):
    lora, prefix = stored(bert_classifiers["lora1"], "senti-lora"), stored(bert_classifiers["prefix2"], "senti-pre")
    other = stored(bert_classifiers["lora2"], "senti-other")
    engine = adapters.Engine(str(tiny_bert), quant="none", device="cpu")
    alone = {ref: engine.classify(TEXTS, adapter=ref) for ref in (lora, prefix, other)}

    equal = f"ensemble:{lora}+{prefix}"
    weighted = f"ensemble:{lora}*0.2+{prefix}*0.5+{other}*0.3"
    rows = [lora, equal, weighted, other]
    calls = []
    hook = engine.body.register_forward_hook(lambda *a: calls.append(1))
    try:
        mixed = engine.classify(TEXTS, adapters=rows)
    finally:
        hook.remove()
    assert len(calls) == 1, "ensemble members must run in the same forward pass as the other rows"

    # float32, but the rows sit in other batches: matmuls may round differently (~3e-8 seen).
    for i, ref in ((0, lora), (3, other)):
        assert mixed[i]["label"] == alone[ref][i]["label"]
        assert all(abs(mixed[i]["probabilities"][k] - p) < 1e-6 for k, p in alone[ref][i]["probabilities"].items())
    for i, (_ref, members, weights) in enumerate([(equal, [lora, prefix], [0.5, 0.5]),
                                                  (weighted, [lora, prefix, other], [0.2, 0.5, 0.3])], 1):
        want = mean_probabilities([alone[m][i] for m in members], weights)
        got = mixed[i]["probabilities"]
        assert set(got) == {"fresh", "rotten"}
        assert all(abs(got[k] - want[k]) < 1e-6 for k in want), (got, want)
        assert mixed[i]["label"] == max(want, key=want.get)
    # The same ensemble for every row, and through the ensemble's info.
    all_rows = engine.classify(TEXTS, adapter=equal)
    for i, row in enumerate(all_rows):
        want = mean_probabilities([alone[lora][i], alone[prefix][i]], [0.5, 0.5])
        assert all(abs(row["probabilities"][k] - want[k]) < 1e-6 for k in want)
    info = engine.load(weighted)
    assert info.task == "classification" and info.method == "ensemble" and info.labels == ["fresh", "rotten"]


def test_classifier_ensemble_refusals(bert_classifiers, tiny_bert, tmp_path):
    import json
    import shutil

    lora = stored(bert_classifiers["lora1"], "senti-lora")
    src = tmp_path / "three"
    shutil.copytree(bert_classifiers["lora2"], src)
    meta = json.loads((src / "adapter_manager.json").read_text())
    meta["task"]["labels"] = ["pos", "neg"]
    (src / "adapter_manager.json").write_text(json.dumps(meta))
    other_labels = stored(src, "other-labels")
    engine = adapters.Engine(str(tiny_bert), quant="none", device="cpu")
    with pytest.raises(EnsembleError, match="labels"):
        engine.load(f"ensemble:{lora}+{other_labels}")
    with pytest.raises(EnsembleError, match="labels"):
        engine.classify(TEXTS[:1], adapter=f"ensemble:{lora}+{other_labels}")
    with pytest.raises(UnknownAdapterError):
        engine.classify(TEXTS[:1], adapter=f"ensemble:{lora}+never-trained@1")
    with pytest.raises(EnsembleError, match="base"):
        engine.load(f"ensemble:{lora}+__base__")


def member_distribution(loaded, prompt: str, tokens: list[int]) -> torch.Tensor:
    """A member's next-token distribution after ``prompt`` + ``tokens``, from plain peft."""
    from adapters.base.loading import format_prompt

    tok = loaded.tokenizer
    ids = tok(format_prompt(tok, prompt), add_special_tokens=False)["input_ids"] + tokens
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([ids], device=loaded.model.device)).logits[0, -1].cpu()
    return torch.softmax(logits.float(), -1)


def test_generation_ensemble_decodes_the_mean_distribution(gen_loras, llama_classifier, tiny_llama):
    a, b, p = (stored(gen_loras[k], f"gen-{k.lower()}") for k in "ABP")
    engine = adapters.Engine(str(tiny_llama), quant="none", device="cpu")
    ens = f"ensemble:{a}*0.6+{p}*0.4"
    rows = [a, ens, None, ens]
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    out = engine.generate(prompts, rows, max_new_tokens=6, logprobs=True)
    # In a mixed batch, each row is what it is alone.
    assert out[0].token_ids == engine.generate([PROMPTS[0]], [a], max_new_tokens=6)[0].token_ids
    again = engine.generate([PROMPTS[0]], [ens], max_new_tokens=6, logprobs=True)[0]
    assert again.token_ids == out[1].token_ids
    assert out[1].token_ids != out[0].token_ids or out[1].logprobs != out[0].logprobs

    members = [(adapters.load(None, a), 0.6), (adapters.load(None, p), 0.4)]
    for result, prompt in ((out[1], PROMPTS[0]), (out[3], PROMPTS[2])):
        assert result.token_ids, "the ensemble generated nothing"
        for step, token in enumerate(result.token_ids):
            mix = sum(w * member_distribution(m, prompt, result.token_ids[:step]) for m, w in members)
            assert int(mix.argmax()) == token
            assert abs(float(torch.log(mix[token])) - result.logprobs[step]) < 1e-4
    # Streaming gives the same text piece by piece.
    assert "".join(engine.stream(PROMPTS[0], ens, max_new_tokens=6)) == out[1].text
    # Sampling from the mixture is reproducible by seed.
    s1 = engine.generate([PROMPTS[1]], [ens], max_new_tokens=5, temperature=1.0, seed=7)[0]
    s2 = engine.generate([PROMPTS[1], PROMPTS[1]], [ens, b], max_new_tokens=5, temperature=1.0, seed=7)[0]
    assert s1.token_ids == s2.token_ids

    info = engine.load(f"ensemble:{a}+{b}+__base__")
    assert info.task == "causal-lm" and info.method == "ensemble"
    cls = stored(llama_classifier, "llama-cls")
    with pytest.raises(EnsembleError, match="mixes"):
        engine.load(f"ensemble:{a}+{cls}")
    with pytest.raises(adapters.AdaptersError, match="classification adapter"):
        engine.generate([PROMPTS[0]], [f"ensemble:{a}+{cls}"], max_new_tokens=2)
