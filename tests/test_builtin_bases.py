"""Integration on the real built-in bases (4-bit MiniLM and 4-bit SmolLM2), kept short. Each run
trains on past a mid-run evaluation (on AVX512-BF16 CPUs that is where bitsandbytes' repacking used
to break training; see tests/test_cpu_paths.py)."""

from pathlib import Path

import adapters
from adapters.runlog import read_events

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHORT = ["data.max_train_samples=64", "data.max_eval_samples=32", "training.max_steps=4",
         "training.eval_every=2", "training.batch_size=8"]


def evaluated_at(result) -> list[int]:
    return [e["step"] for e in read_events(result.run_dir / "events.jsonl") if e["event"] == "eval"]


def test_minilm_4bit_lora_sentiment():
    result = adapters.train(CONFIGS / "rt-minilm-lora.yaml", overrides=SHORT)
    assert result.metrics["test"]["confusion_matrix"] and result.metrics["steps"] == 4
    assert evaluated_at(result)[:2] == [2, 4]
    loaded = adapters.load(None, result.output_dir)
    out = loaded.predict(["a gripping, beautifully acted film", "a dull, lifeless mess"])
    assert all(o["label"] in ("fresh", "rotten") for o in out)


def test_minilm_4bit_prefix_sentiment():
    result = adapters.train(CONFIGS / "rt-minilm-prefix.yaml", overrides=SHORT)
    assert 0 <= result.metrics["test"]["accuracy"] <= 1
    assert evaluated_at(result)[:2] == [2, 4]


def test_smollm2_4bit_lora_chat():
    result = adapters.train(CONFIGS / "chat-smollm2-lora.yaml",
                            overrides=["data.max_train_samples=16", "data.max_eval_samples=8", "training.max_steps=2",
                                       "training.eval_every=1", "training.batch_size=4", "data.max_length=48"])
    assert result.metrics["test"]["perplexity"] > 1
    assert evaluated_at(result)[:2] == [1, 2]
    chat = adapters.load(None, result.output_dir)
    reply = chat.generate(["What is your favourite book?"], max_new_tokens=8)[0]
    assert isinstance(reply, str) and reply


def test_ner_config_on_minilm():
    result = adapters.train(CONFIGS / "ner-minilm-lora.yaml", overrides=SHORT)
    assert "f1" in result.metrics["test"]
