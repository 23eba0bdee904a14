"""Shared fixtures: tiny real models built from configs, loaded through the same code paths as a
real base, and small datasets cut from the built-in sample sets."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The fixtures of the shared helpers (tests/support), registered once for every test module. They
# load after the settings above, and import torch only when a fixture or helper runs.
pytest_plugins = ["support.runtime", "support.merge", "support.server", "support.tui", "support.postgres"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "the film is a gripping and beautifully acted drama",
    "a dull, lifeless and predictable mess of a movie",
    "what is your favourite food? i like pizza and pasta",
    "john smith flew from london to paris for the acme meeting",
    "hello, how are you today? i am fine, thank you",
] * 20


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own store and run directory; the conversion cache is shared."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("ADAPTERS_HOME", str(home))
    yield home


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from adapters.base.resolve import BUILTIN_BASES, builtin_source

    return builtin_source(BUILTIN_BASES["minilm-l6"])


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer BERT with hidden size 32 and MiniLM's real WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer trained on a few sentences, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("tiny-tok")
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> Path:
    """240 real Rotten Tomatoes reviews (balanced) as a CSV with user-style column names."""
    import csv

    from adapters.data.builtin import load_builtin

    columns, _ = load_builtin("builtin:rotten-tomatoes")
    rows = {"fresh": [], "rotten": []}
    for text, label in zip(columns["text"], columns["label"]):
        if len(rows[label]) < 120 and len(text) < 200:
            rows[label].append(text)
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        for label, texts in rows.items():
            for text in texts:
                writer.writerow([text, label])
    return path


@pytest.fixture(scope="session")
def chat_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    pairs = [("what is your favourite food?", "i like pizza and pasta"),
             ("hello, how are you today?", "i am fine, thank you"),
             ("where did john fly?", "john flew from london to paris")] * 20
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return path


@pytest.fixture
def copy_dir():
    def _copy(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        return dst

    return _copy
