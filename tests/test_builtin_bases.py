"""Integration on the real built-in bases (4-bit MiniLM and 4-bit SmolLM2), kept short. Each run
trains on past a mid-run evaluation (on AVX512-BF16 CPUs that is where bitsandbytes' repacking used
to break training; see tests/test_cpu_paths.py).

A few steps on a real base do not make a good classifier (MiniLM's LoRA still answers the majority
class after 4 steps of 8 reviews), so these check what such a run must get right: the loss moves
the right way where 4 steps move it, the adapter kept is the best evaluation's and scores on
reload what training reported, and what it serves is what plain transformers + peft compute."""

import json
import math
from pathlib import Path

import torch

import adapters
from adapters.evaluation.score import score_adapter
from adapters.training.runs import read_events

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHORT = ["data.max_train_samples=64", "data.max_eval_samples=32", "training.max_steps=4",
         "training.eval_every=2", "training.batch_size=8", "training.log_every=1"]
REVIEWS = ["a gripping, beautifully acted film", "a dull, lifeless mess"]


def _events(result) -> list[dict]:
    return read_events(result.run_dir / "events.jsonl")


def evaluated_at(result) -> list[int]:
    return [e["step"] for e in _events(result) if e["event"] == "eval"]


def dev_evals(result) -> dict[int, dict]:
    return {e["step"]: e["metrics"] for e in _events(result) if e["event"] == "eval" and e["split"] == "dev"}


def step_losses(result) -> list[float]:
    return [e["loss"] for e in _events(result) if e["event"] == "step"]


def assert_kept_the_best_and_rescores(result, metric: str, higher_is_better: bool = True) -> None:
    """The adapter kept is the best dev evaluation's (by the config's early-stopping metric): the
    final dev pass over the restored weights gives that evaluation's loss. Scored again from disk,
    it gives the losses training reported, to the precision of the bf16 inference path."""
    evals = dev_evals(result)
    best_step = None  # the rule: a later evaluation replaces the best only when strictly better
    for step in sorted(evals):
        value = evals[step][metric]
        if best_step is None or (value > evals[best_step][metric] if higher_is_better
                                 else value < evals[best_step][metric]):
            best_step = step
    assert result.metrics["best_step"] == best_step, (evals, result.metrics["best_step"])
    assert abs(result.metrics["dev"]["loss"] - evals[best_step]["loss"]) < 1e-5, (evals, result.metrics["dev"])
    # Loaded for inference, the head computes in the base's compute dtype (bf16 on CPUs with fast
    # bf16) where training evaluated its fp32 copy, so logits differ by bf16 rounding; the losses
    # themselves come from fp32 logits on both sides (measured: within 0.05 %).
    for split in ("dev", "test"):
        rescored = score_adapter(result.output_dir, split=split)["loss"]
        assert abs(rescored - result.metrics[split]["loss"]) < 0.003 * result.metrics[split]["loss"], split


def test_minilm_4bit_lora_sentiment(minilm_dir):
    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

    result = adapters.train(CONFIGS / "rt-minilm-lora.yaml", overrides=SHORT)
    assert result.metrics["test"]["confusion_matrix"] and result.metrics["steps"] == 4
    assert evaluated_at(result)[:2] == [2, 4]
    losses = step_losses(result)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    # A fresh two-class head starts at a coin toss's loss (ln 2) and 4 small steps keep it near there.
    assert abs(losses[0] - math.log(2)) < 0.1 and result.metrics["test"]["loss"] < math.log(2) + 0.1
    assert_kept_the_best_and_rescores(result, "f1_macro")

    loaded = adapters.load(None, result.output_dir)
    out = loaded.predict(REVIEWS)
    assert all(o["label"] in ("fresh", "rotten") for o in out)
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-5 for o in out)
    # The same adapter through plain transformers + peft on the same 4-bit base: the same probabilities.
    layer = next(m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit))
    adapter_config = json.loads((result.output_dir / "adapter_config.json").read_text())
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=layer.compute_dtype,
                                      llm_int8_skip_modules=adapter_config["modules_to_save"])
    base = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=2, quantization_config=quantization, dtype=layer.compute_dtype, device_map={"": "cpu"})
    plain = PeftModel.from_pretrained(base, result.output_dir).eval()
    batch = AutoTokenizer.from_pretrained(minilm_dir)(REVIEWS, return_tensors="pt", padding=True)
    with torch.no_grad():
        reference = torch.softmax(plain(**batch).logits.float(), dim=-1)
    ours = torch.tensor([[o["probabilities"][label] for label in ("fresh", "rotten")] for o in out])
    assert torch.allclose(ours, reference, atol=2e-3), (ours, reference)


def test_minilm_4bit_prefix_sentiment():
    result = adapters.train(CONFIGS / "rt-minilm-prefix.yaml", overrides=SHORT)
    assert evaluated_at(result)[:2] == [2, 4]
    assert all(math.isfinite(x) for x in step_losses(result))
    assert_kept_the_best_and_rescores(result, "f1_macro")
    out = adapters.load(None, result.output_dir).predict(REVIEWS)
    assert all(o["label"] in ("fresh", "rotten") and abs(sum(o["probabilities"].values()) - 1) < 1e-5 for o in out)


def test_smollm2_4bit_lora_chat():
    result = adapters.train(CONFIGS / "chat-smollm2-lora.yaml",
                            overrides=["data.max_train_samples=16", "data.max_eval_samples=8", "training.max_steps=2",
                                       "training.eval_every=1", "training.batch_size=4", "data.max_length=48",
                                       "training.log_every=1"])
    assert evaluated_at(result)[:2] == [1, 2]
    evals = dev_evals(result)
    # One more step on the chat format lowers the dev loss.
    assert evals[2]["loss"] < evals[1]["loss"], evals
    test = result.metrics["test"]
    chat = adapters.load(None, result.output_dir)
    assert math.isfinite(test["perplexity"])
    assert abs(test["perplexity"] - math.exp(test["loss"])) < 1e-6 * test["perplexity"]
    reply = chat.generate(["What is your favourite book?"], max_new_tokens=8)[0]
    assert isinstance(reply, str) and reply


def test_ner_config_on_minilm():
    result = adapters.train(CONFIGS / "ner-minilm-lora.yaml", overrides=SHORT)
    losses = step_losses(result)
    # A fresh tagging head starts far from fitting and 4 steps at lr 2e-3 bring its loss well down.
    assert losses[-1] < losses[0] - 0.5, losses
    evals = dev_evals(result)
    assert evals[4]["loss"] < evals[2]["loss"], evals
    assert 0.0 <= result.metrics["test"]["f1"] <= 1.0
    assert_kept_the_best_and_rescores(result, "f1")
    id2label = json.loads((result.output_dir / "label_map.json").read_text())["id2label"]
    words = ["john", "flew", "to", "london"]
    tags = adapters.load(None, result.output_dir).tag([words])[0]
    assert [w for w, _ in tags] == words and {t for _, t in tags} <= set(id2label.values())
