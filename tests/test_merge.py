"""adapters.merge / `adapters merge`: the merged adapter computes what peft's own
add_weighted_adapter computes for the same parents and weights; classifier heads and prefixes are
weighted averages; lineage names every parent; incompatible parents are refused, nothing stored."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import adapters
from adapters.combine.merge import MergeError

from support.merge import stored

PROMPTS = ["what is your favourite food?", "hello", "where did john fly? tell me about the trip"]
TEXTS = ["a gripping, beautifully acted film", "a dull mess", "john flew to paris"]


def _base(path, task: str, labels=None):
    from adapters.base.device import plan_device
    from adapters.base.loading import load_base_model
    from adapters.base.resolve import resolve_base

    model, _ = load_base_model(resolve_base(str(path)), task, "none", plan_device("cpu"), labels)
    return model.eval()


def _logits(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        return model(**batch).logits.float().cpu()


def peft_weighted(base_model, dirs, weights, method, density=None, seed=0):
    """peft's own add_weighted_adapter on the parents loaded with PeftModel.from_pretrained."""
    from peft import PeftModel

    names = [f"parent{i}" for i in range(len(dirs))]
    model = PeftModel.from_pretrained(base_model, str(dirs[0]), adapter_name=names[0])
    for name, d in zip(names[1:], dirs[1:]):
        model.load_adapter(str(d), adapter_name=name)
    torch.manual_seed(seed)
    model.add_weighted_adapter(names, weights, "combined", combination_type=method, density=density)
    model.set_adapter("combined")
    return model.eval()


@pytest.mark.parametrize("method,parents,weights,density", [
    ("linear", "AC", [0.6, 0.4], None),
    ("ties", "AC", [1.0, 0.5], 0.5),
    ("dare_linear", "AC", [0.5, 0.5], 0.7),
    ("dare_ties", "AC", [0.8, 0.4], 0.6),
    ("cat", "AB", [0.7, 0.3], None),  # ranks 8 and 4
    ("svd", "AB", [1.0, -0.5], None),  # a negative weight subtracts
])
def test_lora_merge_equals_peft_add_weighted_adapter(gen_loras, tiny_llama, method, parents, weights, density):
    dirs = [gen_loras[p] for p in parents]
    refs = [stored(d, f"chat-{p.lower()}") for d, p in zip(dirs, parents)]
    result = adapters.merge(refs, weights=weights, method=method, density=density, name="chat-mix")
    assert result.ref == "chat-mix@1" and result.digest.startswith("sha256:")

    loaded = adapters.load(None, result.ref)
    from adapters.base.loading import format_prompt

    tok = loaded.tokenizer
    tok.padding_side = "left"
    texts = [format_prompt(tok, p) for p in PROMPTS]
    got = _logits(loaded.model, tok, texts)
    want = _logits(peft_weighted(_base(tiny_llama, "causal-lm"), dirs, weights, method, density), tok, texts)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    alone = _logits(adapters.load(None, refs[0]).model, tok, texts)
    assert (got - alone).abs().max() > 1e-3, "the merge must differ from its first parent"

    merge = result.lineage["merge"]
    assert merge["method"] == method and merge["density"] == density
    assert [p["ref"] for p in merge["parents"]] == refs
    assert [p["weight"] for p in merge["parents"]] == weights
    from adapters_store import Store

    with Store() as s:
        version = s.resolve(result.ref)
        assert version.parent == refs[0]
        assert version.lineage["merge"]["parents"][1]["digest"] == s.resolve(refs[1]).digest
        assert version.method == "lora" and version.task == "causal-lm"
        assert version.lineage["base"] == s.resolve(refs[0]).lineage["base"]
    if method.startswith("dare"):
        assert merge["seed"] == 0


def _strip_heads(src, dst):
    """A copy of a classifier adapter as plain LoRA (no modules_to_save, no head weights): what
    peft's add_weighted_adapter accepts."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    # peft keeps LoRA off the modules it saves whole; without modules_to_save, say so explicitly
    # (the target "dense" also names the pooler's layer).
    cfg.update(modules_to_save=None, task_type=None, exclude_modules=r".*pooler.*|classifier")
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    state = load_file(str(dst / "adapter_model.safetensors"))
    save_file({k: v for k, v in state.items() if ".lora_" in k}, str(dst / "adapter_model.safetensors"))
    return {k: v for k, v in state.items() if ".lora_" not in k}


def test_classifier_merge_averages_heads(bert_classifiers, tiny_bert, tmp_path):
    from peft import PeftModel

    dirs = [bert_classifiers["lora1"], bert_classifiers["lora2"]]
    refs = [stored(dirs[0], "senti-1"), stored(dirs[1], "senti-2")]
    # peft alone refuses: both parents save the classifier head (modules_to_save).
    base = _base(tiny_bert, "classification", ["fresh", "rotten"])
    both = PeftModel.from_pretrained(base, str(dirs[0]), adapter_name="one")
    both.load_adapter(str(dirs[1]), adapter_name="two")
    with pytest.raises(ValueError, match="modules_to_save"):
        both.add_weighted_adapter(["one", "two"], [0.7, 0.3], "m", combination_type="ties", density=0.5)

    result = adapters.merge(refs, weights=[1.4, 0.6], method="ties", density=0.5, name="senti-mix")
    head = result.lineage["merge"]["head"]
    assert head["combination"] == "weighted average" and head["weights"] == [0.7, 0.3]
    assert "classifier" in head["modules"]

    heads = [_strip_heads(d, tmp_path / f"plain{i}") for i, d in enumerate(dirs)]
    reference = peft_weighted(_base(tiny_bert, "classification", ["fresh", "rotten"]),
                              [tmp_path / "plain0", tmp_path / "plain1"], [1.4, 0.6], "ties", 0.5)
    params = dict(reference.base_model.model.named_parameters())
    for key in heads[0]:
        name = key.removeprefix("base_model.model.")
        params[name].data.copy_(0.7 * heads[0][key] + 0.3 * heads[1][key])
    loaded = adapters.load(None, result.ref)
    assert loaded.labels == ["fresh", "rotten"]
    got = _logits(loaded.model, loaded.tokenizer, TEXTS)
    want = _logits(reference, loaded.tokenizer, TEXTS)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    # The runtime serves it like any trained classifier.
    engine = adapters.Engine(str(tiny_bert), quant="none", device="cpu")
    rows = engine.classify(TEXTS, adapter=result.ref)
    probs = torch.softmax(got, -1)
    for row, p in zip(rows, probs):
        assert abs(row["probabilities"]["fresh"] - float(p[0])) < 1e-5


def test_prefix_merge_is_the_weighted_average(bert_classifiers, tiny_bert):
    from safetensors.torch import load_file

    dirs = [bert_classifiers["prefix1"], bert_classifiers["prefix2"]]
    refs = [stored(dirs[0], "pre-1"), stored(dirs[1], "pre-2")]
    with pytest.raises(MergeError, match="linear only"):
        adapters.merge(refs, method="ties", name="pre-mix")
    result = adapters.merge(refs, weights=[3, 1], name="pre-mix")
    parents = [load_file(str(d / "adapter_model.safetensors")) for d in dirs]
    merged = load_file(str(result.path / "adapter_model.safetensors"))
    assert set(merged) == set(parents[0])
    for key in merged:
        assert torch.allclose(merged[key], 0.75 * parents[0][key] + 0.25 * parents[1][key], atol=1e-6)
    assert result.lineage["merge"]["prefix_weights"] == [0.75, 0.25]
    cfg = json.loads((result.path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PREFIX_TUNING" and cfg["num_virtual_tokens"] == 3
    prediction = adapters.load(None, result.ref).predict(TEXTS)
    engine = adapters.Engine(str(tiny_bert), quant="none", device="cpu")
    for row, alone in zip(engine.classify(TEXTS, adapter=result.ref), prediction):
        assert abs(row["probabilities"]["fresh"] - alone["probabilities"]["fresh"]) < 1e-5


def _relabelled(src, dst, labels):
    shutil.copytree(src, dst)
    meta = json.loads((dst / "adapter_manager.json").read_text())
    meta["task"]["labels"] = labels
    (dst / "adapter_manager.json").write_text(json.dumps(meta))
    (dst / "label_map.json").write_text(json.dumps({"id2label": dict(enumerate(labels)),
                                                    "label2id": {n: i for i, n in enumerate(labels)}}))
    return dst


def test_incompatible_parents_are_refused_and_nothing_is_stored(bert_classifiers, gen_loras, llama_classifier,
                                                                tmp_path):
    from adapters_store import RefNotFound, Store

    bert = stored(bert_classifiers["lora1"], "bert-lora")
    bert_prefix = stored(bert_classifiers["prefix1"], "bert-prefix")
    flipped = stored(_relabelled(bert_classifiers["lora2"], tmp_path / "flip", ["rotten", "fresh"]), "bert-flip")
    llama_cls = stored(llama_classifier, "llama-cls")
    gen_a, gen_b = stored(gen_loras["A"], "gen-a"), stored(gen_loras["B"], "gen-b")
    with Store() as s:
        before = len(s.list())
    cases = [
        ([bert, llama_cls], {}, "different bases"),
        ([bert, bert_prefix], {}, "different methods"),
        ([gen_a, llama_cls], {}, "different tasks"),
        ([bert, flipped], {}, "different label maps"),
        ([gen_a, gen_b], {"method": "linear"}, "one LoRA rank"),
        ([gen_a, gen_b], {"method": "ties"}, "one LoRA rank"),
        ([gen_a, gen_b], {"method": "cat", "density": 0.5}, "--density applies to"),
        ([gen_a, gen_b], {"method": "linear", "weights": [1, -1]}, "no negative weights"),
        ([gen_a, gen_b], {"method": "svd", "weights": [1]}, "1 weights for 2 adapters"),
        ([gen_a, gen_b], {"method": "ties", "density": 1.5}, "density must be in"),
        ([gen_a, gen_b], {"method": "average"}, "unknown merge method"),
        ([gen_a], {}, "at least two adapters"),
    ]
    for refs, options, message in cases:
        with pytest.raises(MergeError, match=message) as info:
            adapters.merge(refs, name="never", **options)
        assert info.value.hint and info.value.exit_code == 2
    with pytest.raises(RefNotFound):
        adapters.merge([gen_a, "no-such@1"], name="never")
    with Store() as s:
        assert len(s.list()) == before and "never" not in s.names()
        assert not any(s.tmp.glob("*/v-*")), "no staged version left behind"


def test_merge_cli(gen_loras, bert_classifiers, capsys):
    from adapters.cli.main import main

    a, c = stored(gen_loras["A"], "gen-a"), stored(gen_loras["C"], "gen-c")
    code = main(["merge", a, c, "--weights", "0.7,0.3", "--method", "dare_ties", "--density", "0.6",
                 "--seed", "3", "--name", "gen-mix", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads(out)
    assert data["ref"] == "gen-mix@1"
    merge = data["lineage"]["merge"]
    assert merge["method"] == "dare_ties" and merge["density"] == 0.6 and merge["seed"] == 3
    assert [(p["ref"], p["weight"]) for p in merge["parents"]] == [(a, 0.7), (c, 0.3)]

    assert main(["merge", a, c, "--name", "gen-avg"]) == 0
    out = capsys.readouterr().out
    assert "gen-avg@1" in out and "linear" in out

    prefix = stored(bert_classifiers["prefix1"], "bert-prefix")
    assert main(["merge", a, prefix, "--name", "bad"]) == 2
    err = capsys.readouterr().err
    assert "different" in err and "hint:" in err
    assert main(["merge", a, c, "--weights", "0.5,x", "--name", "bad"]) == 2
    assert "hint:" in capsys.readouterr().err
    assert main(["merge", a, "--name", "bad"]) == 2
    assert "at least two" in capsys.readouterr().err
