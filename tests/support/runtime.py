"""Shared helpers for the runtime tests (no tests here): tiny trained adapters, perturbed so that
every adapter visibly changes the output, and single-adapter references through plain peft."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import pytest

import adapters

from support.config import tiny_config

_TRAINED: dict[tuple, Path] = {}
CHAT = {"prompt_column": "question", "response_column": "answer", "max_length": 64}
PROMPTS = ["what is your favourite food?", "hello", "where did john fly? tell me about the trip",
           "hi there, how are you", "a dull movie", "john smith flew from london"]


def train(root: Path, name: str, base: Path, source: Path, /, **over) -> Path:
    """Train a tiny adapter once per session (2 optimizer steps: mechanics, not quality)."""
    key = (name, str(base), str(source))
    if key not in _TRAINED:
        training = {"epochs": 1, "batch_size": 8, "max_steps": 2, "learning_rate": 1e-2, "seed": 0,
                    "log_every": 1}
        cfg = tiny_config(base, source, training=training, **over)
        out = root / name
        adapters.train(cfg, output=out, run_dir=root / f"run-{name}")
        # The noise is seeded by the name, so an adapter is the same whichever tests ran before.
        _TRAINED[key] = perturb(out, out, seed=1 + zlib.crc32(name.encode()) % 8)
    return _TRAINED[key]


def perturb(src: Path, dst: Path, seed: int, scale: float = 0.3) -> Path:
    """A copy of ``src`` whose LoRA B matrices get noise, so the adapter moves the logits far from
    the base (2 training steps barely move them) and any mix-up between rows shows."""
    import torch
    from safetensors.torch import load_file, save_file

    if dst != src:
        shutil.copytree(src, dst)
    path = dst / "adapter_model.safetensors"
    state = load_file(str(path))
    g = torch.Generator().manual_seed(1000 + seed)
    for key, tensor in state.items():
        if ".lora_B." in key:
            state[key] = tensor + scale * torch.randn(tensor.shape, generator=g)
        elif key == "prompt_embeddings":
            state[key] = tensor * (1 + 0.1 * seed)
    save_file(state, str(path), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="session")
def runtime_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runtime-adapters")


@pytest.fixture(scope="session")
def gen_adapters(runtime_root, tiny_llama, chat_jsonl) -> dict[str, Path]:
    """Two LoRA and two prefix causal-LM adapters (prefixes of 4 and 7 virtual tokens)."""
    data = {"source": str(chat_jsonl), **CHAT}
    kw = {"task": "causal-lm", "data": data}
    return {
        "A": train(runtime_root, "gen-lora-a", tiny_llama, chat_jsonl, **kw),
        "B": train(runtime_root, "gen-lora-b", tiny_llama, chat_jsonl, lora={"r": 4, "alpha": 8,
                   "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]}, **kw),
        "P": train(runtime_root, "gen-prefix-p", tiny_llama, chat_jsonl, method="prefix",
                   prefix={"num_virtual_tokens": 4}, **kw),
        "Q": train(runtime_root, "gen-prefix-q", tiny_llama, chat_jsonl, method="prefix",
                   prefix={"num_virtual_tokens": 7, "projection": True, "projection_hidden_size": 16}, **kw),
    }


@pytest.fixture(scope="session")
def llama_cls_adapters(runtime_root, tiny_llama, sentiment_csv) -> dict[str, Path]:
    return {
        "lora": train(runtime_root, "cls-llama-lora", tiny_llama, sentiment_csv),
        "prefix": train(runtime_root, "cls-llama-prefix", tiny_llama, sentiment_csv, method="prefix",
                        prefix={"num_virtual_tokens": 5}),
    }


@pytest.fixture(scope="session")
def bert_cls_adapters(runtime_root, tiny_bert, sentiment_csv) -> dict[str, Path]:
    return {
        "lora": train(runtime_root, "cls-bert-lora", tiny_bert, sentiment_csv),
        "prefix": train(runtime_root, "cls-bert-prefix", tiny_bert, sentiment_csv, method="prefix",
                        prefix={"num_virtual_tokens": 3}),
    }


def reference_generate(base: Path, adapter: Path | None, prompt: str, max_new_tokens: int, quant: str,
                       device: str = "cpu", compute_dtype: str = "auto"):
    """Greedy tokens and their log-probabilities from plain peft (``PeftModel.from_pretrained``
    through ``adapters.load``), one prompt alone; the bare base when ``adapter`` is None."""
    import torch

    from adapters.base.device import plan_device
    from adapters.base.loading import format_prompt, load_base_model, load_tokenizer
    from adapters.base.resolve import resolve_base
    from adapters.inference import load

    if adapter is None:
        resolved = resolve_base(str(base))
        tok = load_tokenizer(resolved, "causal-lm")
        model, _ = load_base_model(resolved, "causal-lm", quant, plan_device(device, compute_dtype))
        model.eval()
    else:
        loaded = load(None, adapter, quant=quant, device=device, compute_dtype=compute_dtype)
        model, tok = loaded.model, loaded.tokenizer
    ids = tok(format_prompt(tok, prompt), return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                             output_scores=True, return_dict_in_generate=True)
    tokens = out.sequences[0, ids["input_ids"].shape[1]:].tolist()
    logprobs = [float(torch.log_softmax(s[0].float(), -1)[t]) for s, t in zip(out.scores, tokens)]
    if tokens and tokens[-1] == tok.eos_token_id:
        tokens, logprobs = tokens[:-1], logprobs[:-1]
    return tokens, logprobs


def reference_classify(adapter: Path, text: str, quant: str, device: str = "cpu",
                       compute_dtype: str = "auto") -> dict[str, float]:
    return reference_classify_all(adapter, [text], quant, device, compute_dtype)[0]


def reference_classify_all(adapter: Path, texts: list[str], quant: str, device: str = "cpu",
                           compute_dtype: str = "auto") -> list[dict[str, float]]:
    """Plain peft's class probabilities, each text alone (no padding), the adapter loaded once."""
    import torch

    from adapters.inference import load

    loaded = load(None, adapter, quant=quant, device=device, compute_dtype=compute_dtype)
    out = []
    for text in texts:
        batch = loaded.tokenizer([text], truncation=True, return_tensors="pt").to(loaded.model.device)
        with torch.no_grad():
            probs = torch.softmax(loaded.model(**batch).logits.float(), -1)[0]
        out.append({label: float(p) for label, p in zip(loaded.labels, probs)})
    return out
