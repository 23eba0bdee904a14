"""Training on tiny models built from configs: every method x task, 4-bit and full precision."""

import json
import math

import pytest
import torch

import adapters
from adapters.training.runs import read_events

from support.config import tiny_config


def _events(result):
    return read_events(result.run_dir / "events.jsonl")


SUBJECTS = ["the film", "this movie", "the plot", "the acting", "the ending", "the score"]


def _keyword_text(label: str, subject: str) -> str:
    word = "great" if label == "good" else "awful"
    return f"{word} {subject} {word}"


@pytest.fixture(scope="module")
def keyword_csv(tmp_path_factory):
    """A learnable tiny task: one keyword decides the label ("great" -> good, "awful" -> bad);
    every subject appears with both labels, so nothing else predicts it."""
    rows = [(_keyword_text(label, SUBJECTS[(i // 2) % len(SUBJECTS)]), label)
            for i, label in enumerate(["good", "bad"] * 120)]
    path = tmp_path_factory.mktemp("keyword") / "keyword.csv"
    path.write_text("review,sentiment\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return path


KEYWORD_DATA = {"text_column": "review", "label_column": "sentiment", "max_length": 16}
KEYWORD_TRAINING = {"epochs": 4, "learning_rate": 3e-2, "batch_size": 8}


def _majority_rate(test: dict) -> float:
    """The accuracy of always answering the most frequent true label, from the confusion matrix's rows."""
    support = [sum(row) for row in test["confusion_matrix"]]
    return max(support) / sum(support)


def _assert_beats_majority(result, loaded):
    test = result.metrics["test"]
    majority = _majority_rate(test)
    assert test["accuracy"] > majority + 0.2, (test["accuracy"], majority)
    # Independently of the trainer's metrics: the saved adapter, loaded back, labels fresh sentences.
    probes = [(_keyword_text(label, subject), label) for subject in ("the soundtrack", "the cast")
              for label in ("good", "bad")]
    predicted = [p["label"] for p in loaded.predict([t for t, _ in probes])]
    assert predicted == [label for _, label in probes]


def test_lora_classification_writes_a_peft_dir_and_a_run_log(tiny_bert, sentiment_csv, tmp_path):
    result = adapters.train(tiny_config(tiny_bert, sentiment_csv), output=tmp_path / "out")
    out = result.output_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "label_map.json", "adapter_manager.json",
                 "training_config.yaml"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin"))
    lineage = json.loads((out / "adapter_manager.json").read_text())
    assert lineage["task"]["labels"] == ["fresh", "rotten"]
    assert lineage["data"]["columns"]["text"] == "review"
    assert lineage["base"]["fingerprint"].startswith("sha256:")
    test = result.metrics["test"]
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "confusion_matrix", "per_class"):
        assert key in test
    kinds = [e["event"] for e in _events(result)]
    assert kinds[0] == "start" and kinds[-1] == "end" and "step" in kinds and "eval" in kinds
    step = next(e for e in _events(result) if e["event"] == "step")
    assert {"step", "loss", "lr", "tokens_per_s"} <= set(step)


def test_plain_peft_loads_the_output(tiny_bert, sentiment_csv, tmp_path):
    """The output directory is an ordinary PEFT adapter: PeftModel.from_pretrained takes it as is."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = adapters.train(tiny_config(tiny_bert, sentiment_csv), output=tmp_path / "out")
    labels = json.loads((result.output_dir / "label_map.json").read_text())["id2label"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=len(labels))
    plain = PeftModel.from_pretrained(base, result.output_dir).eval()
    ours = adapters.load(None, result.output_dir)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    batch = tok(["a fine film", "a dull mess"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ours_logits = ours.model(**batch.to(ours.model.device)).logits.float().cpu()
        # fp32 on a CPU; on a GPU ours computes in bf16
        tolerance = 1e-5 if ours.model.device.type == "cpu" else 2e-2
        assert torch.allclose(plain(**batch.to("cpu")).logits, ours_logits, atol=tolerance)
    prediction = ours.predict(["a fine film"])[0]
    assert prediction["label"] in ("fresh", "rotten")
    assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-4


@pytest.mark.parametrize("method", ["lora", pytest.param("prefix", marks=pytest.mark.xfail(
    strict=True, reason="prefix tuning alone does not learn the keyword task on a random 2-layer BERT "
                        "(answers the majority class at lr 1e-2..3e-1, 4-10 epochs)"))])
def test_4bit_encoder_classification(tiny_bert, keyword_csv, method):
    cfg = tiny_config(tiny_bert, keyword_csv, method=method, quant="4bit",
                      data={"source": str(keyword_csv), **KEYWORD_DATA}, training=KEYWORD_TRAINING)
    result = adapters.train(cfg)
    loaded = adapters.load(None, result.output_dir)
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.modules())
    _assert_beats_majority(result, loaded)


@pytest.mark.parametrize("method,quant", [("lora", "4bit"), ("prefix", "4bit"), ("lora", "8bit")])
def test_decoder_instruction_tuning_learns(tiny_llama, chat_jsonl, method, quant):
    cfg = tiny_config(tiny_llama, chat_jsonl, task="causal-lm", method=method, quant=quant,
                      data={"source": str(chat_jsonl), "prompt_column": "question", "response_column": "answer",
                            "max_length": 64},
                      training={"epochs": 3, "batch_size": 8, "learning_rate": 1e-2, "log_every": 1})
    result = adapters.train(cfg)
    steps = [e for e in _events(result) if e["event"] == "step"]
    assert steps[-1]["loss"] < steps[0]["loss"]
    # A uniform guess over the vocabulary has perplexity len(vocabulary): the trained adapter must do better.
    from transformers import AutoTokenizer

    vocabulary = len(AutoTokenizer.from_pretrained(tiny_llama))
    test = result.metrics["test"]
    assert abs(test["perplexity"] - math.exp(test["loss"])) < 1e-6 * test["perplexity"]
    assert test["perplexity"] < vocabulary, (test["perplexity"], vocabulary)
    text = adapters.load(None, result.output_dir).generate(["what is your favourite food?"], max_new_tokens=5)
    assert isinstance(text[0], str)


def test_decoder_classification_with_prefix(tiny_llama, keyword_csv):
    cfg = tiny_config(tiny_llama, keyword_csv, method="prefix", quant="4bit",
                      data={"source": str(keyword_csv), **KEYWORD_DATA}, training=KEYWORD_TRAINING)
    result = adapters.train(cfg)
    assert set(result.metrics["test"]["per_class"]) == {"good", "bad"}
    _assert_beats_majority(result, adapters.load(None, result.output_dir))


def test_text_pairs(tiny_bert, tmp_path):
    rows = [("the cat sat", "a cat was sitting", "same"), ("the cat sat", "stocks fell today", "different")] * 120
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"a": a, "b": b, "y": y}) + "\n" for a, b, y in rows))
    cfg = tiny_config(tiny_bert, path, data={"source": str(path), "text_column": "a", "text_pair_column": "b",
                                             "label_column": "y", "max_length": 32},
                      training=KEYWORD_TRAINING)
    result = adapters.train(cfg)
    test = result.metrics["test"]
    assert test["per_class"].keys() == {"different", "same"}
    # Only the second text tells the two labels apart, so beating the majority class needs the pair.
    assert test["accuracy"] > _majority_rate(test) + 0.2, test


def test_token_classification_on_builtin_ner(tiny_bert):
    cfg = tiny_config(tiny_bert, "builtin:wnut16", task="token-classification",
                      data={"source": "builtin:wnut16", "max_length": 48, "max_train_samples": 96,
                            "max_eval_samples": 48})
    result = adapters.train(cfg)
    assert {"precision", "recall", "f1"} <= set(result.metrics["test"])
    tags = adapters.load(None, result.output_dir).tag([["john", "lives", "in", "london"]])
    assert [w for w, _ in tags[0]] == ["john", "lives", "in", "london"]
    id2label = json.loads((result.output_dir / "label_map.json").read_text())["id2label"]
    names = set(id2label.values() if isinstance(id2label, dict) else id2label)
    assert "O" in names and len(names) > 1
    assert {tag for _, tag in tags[0]} <= names
    assert 0.0 <= result.metrics["test"]["f1"] <= 1.0


def test_early_stopping_keeps_the_best_and_stops(tiny_bert, keyword_csv):
    """A learning rate far too high makes the dev loss climb after the first evaluations: training
    must stop right after `patience` evaluations without a lower dev loss, and keep the best step's adapter."""
    from adapters.evaluation.score import score_adapter

    patience = 2
    cfg = tiny_config(tiny_bert, keyword_csv, data={"source": str(keyword_csv), **KEYWORD_DATA}, training={
        "epochs": 10, "learning_rate": 0.3, "eval_every": 2, "batch_size": 8, "seed": 0,
        "early_stopping": {"metric": "loss", "mode": "min", "patience": patience}})
    result = adapters.train(cfg, store=False)
    events = _events(result)
    total_steps = next(e for e in events if e["event"] == "start")["total_steps"]
    evals = [e for e in events if e["event"] == "eval" and e["split"] == "dev"]
    # Replay the rule on the logged dev losses: where should it stop, and which step is best?
    best, best_step, bad, stop_at = None, None, 0, None
    for i, e in enumerate(evals):
        loss = e["metrics"]["loss"]
        improved = best is None or loss < best
        assert e["best"] == improved, e
        best, best_step, bad = (loss, e["step"], 0) if improved else (best, best_step, bad + 1)
        if bad >= patience:
            stop_at = i
            break
    assert stop_at is not None, "the dev loss never stopped improving; the test needs a run that should stop"
    assert len(evals) == stop_at + 1, "training went on evaluating after patience ran out"
    assert result.metrics["steps"] == evals[-1]["step"] < total_steps
    assert result.metrics["best_step"] == best_step != evals[-1]["step"]
    # The adapter on disk is the best step's, not the last one's: rescoring it gives the best dev loss.
    rescored = score_adapter(result.output_dir, split="dev")["loss"]
    assert abs(rescored - best) < 1e-4
    assert abs(rescored - evals[-1]["metrics"]["loss"]) > 1e-3


def test_oversampling_balances_train(tiny_bert, tmp_path):
    rows = [("good film", "pos")] * 60 + [("bad film", "neg")] * 15
    path = tmp_path / "skewed.csv"
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    cfg = tiny_config(tiny_bert, path, data={"source": str(path), "text_column": "text", "label_column": "label",
                                             "oversample": True, "max_length": 16})
    result = adapters.train(cfg)
    balance = json.loads((result.output_dir / "adapter_manager.json").read_text())["data"]["class_balance"]
    assert balance["train"]["neg"] == balance["train"]["pos"]
    assert balance["train_original"]["neg"] < balance["train_original"]["pos"]


def test_prefix_projection_roundtrips_through_the_saved_adapter(tiny_bert, sentiment_csv):
    """With reparameterization an MLP produces the prefix while training; the saved adapter must
    score exactly what the trained model scored on the same dev split."""
    from adapters.evaluation.score import score_adapter

    cfg = tiny_config(tiny_bert, sentiment_csv, method="prefix",
                      prefix={"num_virtual_tokens": 4, "projection": True, "projection_hidden_size": 16})
    result = adapters.train(cfg, store=False)
    rescored = score_adapter(result.output_dir, split="dev")
    assert rescored["confusion_matrix"] == result.metrics["dev"]["confusion_matrix"]
    assert abs(rescored["loss"] - result.metrics["dev"]["loss"]) < 1e-4


def test_gradient_accumulation_counts_optimizer_steps(tiny_bert, sentiment_csv):
    plain = adapters.train(tiny_config(tiny_bert, sentiment_csv, training={"batch_size": 8}), store=False)
    accumulated = adapters.train(tiny_config(tiny_bert, sentiment_csv,
                                             training={"batch_size": 8, "gradient_accumulation": 2}), store=False)
    assert accumulated.metrics["steps"] == -(-plain.metrics["steps"] // 2)


@pytest.mark.parametrize("eval_every, steps", [("end", [5]), (2, [2, 4, 5])])
def test_eval_every_end_evaluates_once_after_the_last_step(tiny_bert, keyword_csv, eval_every, steps):
    cfg = tiny_config(tiny_bert, keyword_csv, data={"source": str(keyword_csv), **KEYWORD_DATA},
                      training={"max_steps": 5, "eval_every": eval_every, "batch_size": 8, "seed": 0})
    result = adapters.train(cfg, store=False)
    assert [e["step"] for e in _events(result) if e["event"] == "eval" and e["split"] == "dev"] == steps
    assert result.metrics["steps"] == 5
