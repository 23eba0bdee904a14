"""`adapters export REF DIR --merged`: the base with the adapter merged in, saved as a full model
that plain transformers loads, predicts what base + adapter predicts: exactly (1e-5) on a float32
base; on a 4-bit base the base is dequantized first and the deviation is measured and bounded."""

from __future__ import annotations

import json

import torch

import adapters

from support.merge import stored
from support.runtime import train

TEXTS = ["a gripping, beautifully acted film", "a dull, lifeless and predictable mess", "john flew to paris",
         "what a fine film", "the plot is thin"]
# Measured on this tiny BERT (hidden 32, LoRA noise 0.3), against the adapter on its 4-bit base with
# float32 compute: 4.8e-7, against 1.6e-4 when the LoRA delta is merged into the 4-bit weights
# (peft's merge_and_unload re-quantizes). The bound leaves room for other CPUs' float32 kernels and
# still fails that rounded merge. The export is float32, so the reference computes in float32 too:
# with bf16 compute (auto on AVX512-BF16 CPUs) the reference itself moves by ~1e-4.
FOUR_BIT_TOLERANCE = 1e-5


def plain_transformers_probs(path, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, truncation=True, return_tensors="pt")).logits
    return torch.softmax(logits.float(), -1), model


def adapter_probs(ref, texts, compute_dtype="auto"):
    rows = adapters.load(None, ref, compute_dtype=compute_dtype).predict(texts)
    return torch.tensor([[r["probabilities"][k] for k in ("fresh", "rotten")] for r in rows])


def test_merged_export_of_a_float32_classifier_is_exact(bert_classifiers, tmp_path, capsys):
    from adapters.cli.main import main

    ref = stored(bert_classifiers["lora1"], "senti")
    out = tmp_path / "merged"
    assert main(["export", ref, str(out), "--merged"]) == 0
    assert "merged into" in capsys.readouterr().out
    assert not (out / "adapter_config.json").exists(), "a full model, not an adapter"
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["id2label"] == {"0": "fresh", "1": "rotten"}
    got, model = plain_transformers_probs(out, TEXTS)
    assert model.classifier.weight.dtype == torch.float32
    want = adapter_probs(ref, TEXTS)
    assert (got - want).abs().max() < 1e-5, (got - want).abs().max()
    provenance = json.loads((out / "adapters_export.json").read_text())
    assert provenance["dequantized"] is False and provenance["quant_before_merge"] == "none"


def test_merged_export_of_a_causal_lm(gen_loras, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = stored(gen_loras["A"], "chat")
    out = tmp_path / "merged-lm"
    result = adapters.api.export_merged(ref, out)
    assert result.task == "causal-lm" and not result.dequantized
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok(["what is your favourite food?", "hello there"], return_tensors="pt", padding=True)
    loaded = adapters.load(None, ref)
    with torch.no_grad():
        got, want = model(**ids).logits, loaded.model(**ids).logits
    assert (got - want).abs().max() < 1e-5


def test_merged_export_of_a_4bit_classifier_dequantizes_first(tiny_bert, sentiment_csv, merge_root, tmp_path,
                                                              capsys):
    from peft import PeftModel

    from adapters.cli.main import main

    four_bit = train(merge_root, "merge-bert-4bit", tiny_bert, sentiment_csv, quant="4bit")
    ref = stored(four_bit, "senti-4bit")
    out = tmp_path / "merged-4bit"
    assert main(["export", ref, str(out), "--merged"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "dequantized to float32" in printed and "never into the quantized weights" in printed
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    got, model = plain_transformers_probs(out, TEXTS)
    assert model.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.float32
    want = adapter_probs(ref, TEXTS, "float32")  # the adapter on its 4-bit base, as trained
    deviation = float((got - want).abs().max())

    # What merging into the 4-bit weights would give: peft's merge_and_unload on the 4-bit layers.
    loaded = adapters.load(None, ref, compute_dtype="float32")
    rounded = PeftModel.from_pretrained(loaded.model.base_model.model, str(four_bit)).merge_and_unload()
    with torch.no_grad():
        batch = loaded.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
        naive = torch.softmax(rounded(**batch).logits.float(), -1)
    naive_deviation = float((naive - want).abs().max())
    print(f"\n4-bit base: merged export vs base + adapter, max |probability difference| = {deviation:.2e}; "
          f"merging into the 4-bit weights instead: {naive_deviation:.2e}")
    assert deviation < FOUR_BIT_TOLERANCE
    assert json.loads((out / "adapters_export.json").read_text())["dequantized"] is True


def test_merged_export_refusals(bert_classifiers, tmp_path, capsys):
    from adapters.cli.main import main

    prefix = stored(bert_classifiers["prefix1"], "senti-prefix")
    assert main(["export", prefix, str(tmp_path / "p"), "--merged"]) == 2
    err = capsys.readouterr().err
    assert "only LoRA adapters merge" in err and "hint:" in err
    assert not (tmp_path / "p").exists()
    lora = stored(bert_classifiers["lora1"], "senti")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert main(["export", lora, str(busy), "--merged"]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert main(["export", lora, str(tmp_path / "v"), "--merged", "--format", "vllm"]) == 2
    assert not list(tmp_path.glob(".*tmp-*")), "no staging directory left behind"
