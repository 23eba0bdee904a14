"""The engine feeds prefixes as a KV cache under the name the installed transformers takes.

transformers 5.24 renamed the forward argument and output field ``past_key_values`` to ``cache``
(the old name is a deprecated alias until 5.40). ``adapters.runtime.prefix.cache_argument`` reads
the name off the model's forward signature. These tests need no peft prefix tuning (peft 0.21.2
refuses transformers 5.24): the prefix adapters are written by hand, so they run on either side of
the rename. The first prefix is the base's own key/values for a few tokens, which makes it exact
to check: a row with it must decode as if those tokens were in front of its prompt.
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from packaging.version import Version

from adapters.runtime import Engine
from adapters.runtime.prefix import cache_argument, cache_kwargs, returned_cache

RENAMED = Version(transformers.__version__) >= Version("5.24.0")
PREFIX_TEXT = "john smith flew from london to paris"
PROMPT = "what is your favourite food?"


def write_prefix_adapter(path: Path, base: Path, kv: list[tuple[torch.Tensor, torch.Tensor]], *,
                         task: str = "CAUSAL_LM", head: dict[str, torch.Tensor] | None = None,
                         labels: list[str] | None = None) -> Path:
    """A PEFT prefix-tuning directory from per-layer (key, value), each [kv_heads, n, head_dim]:
    the inverse of ``adapters.runtime.adapter_parts.prefix_layers``."""
    from safetensors.torch import save_file

    heads, n, head_dim = kv[0][0].shape
    stacked = torch.stack([t for layer in kv for t in layer])  # [layers * 2, heads, n, head_dim]
    embeddings = stacked.permute(2, 0, 1, 3).reshape(n, -1).contiguous()
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "PREFIX_TUNING", "task_type": task, "base_model_name_or_path": str(base),
        "num_virtual_tokens": n, "num_layers": len(kv), "num_attention_heads": heads,
        "token_dim": heads * head_dim, "num_transformer_submodules": 1, "inference_mode": True}))
    if labels:
        (path / "label_map.json").write_text(json.dumps({"id2label": dict(enumerate(labels))}))
    save_file({"prompt_embeddings": embeddings, **(head or {})}, str(path / "adapter_model.safetensors"))
    return path


class ForwardSpy:
    """The keyword names each call of ``module`` got, as the engine passed them."""

    def __init__(self, module: torch.nn.Module):
        self.calls: list[set[str]] = []
        self._handle = module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append(set(kwargs))

    def close(self):
        self._handle.remove()


def fail_on_old_cache_name():
    """From 5.24 on, transformers warns when it is given the old keyword: make that an error."""
    warnings.filterwarnings("error", message=".*past_key_values.*", category=FutureWarning)


def test_cache_argument_is_the_forwards_own_parameter(tiny_llama, tiny_bert):
    from transformers import BertModel, DistilBertConfig, DistilBertModel, DynamicCache, LlamaForCausalLM

    llama = LlamaForCausalLM.from_pretrained(tiny_llama).eval()
    bert = BertModel.from_pretrained(tiny_bert).eval()
    expected = "cache" if RENAMED else "past_key_values"
    for model in (llama, llama.model, bert):
        name = cache_argument(model)
        assert name == expected, type(model).__name__
        assert name in inspect.signature(type(model).forward).parameters
    # The output hands the cache back under the same name.
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        out = llama(input_ids=ids, use_cache=True)
    cache = returned_cache(llama, out)
    assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 4
    assert expected in out.keys()
    # A forward without any cache argument gets none, and refuses a prefix rather than drop it.
    distil = DistilBertModel(DistilBertConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2, hidden_dim=32))
    assert cache_argument(distil) is None and cache_kwargs(distil, None) == {}
    with pytest.raises(ValueError, match="takes no KV cache"):
        cache_kwargs(distil, cache)


def _own_prefix(model, tokenizer) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]:
    """The base's key/values for PREFIX_TEXT, per layer [kv_heads, n, head_dim]."""
    ids = tokenizer(PREFIX_TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
    cache = returned_cache(model, out)
    return ids, [(layer.keys[0].clone(), layer.values[0].clone()) for layer in cache.layers]


def _greedy(model, ids: list[int], steps: int, eos: set[int]) -> tuple[list[int], list[float]]:
    """Greedy decoding by recomputing the whole sequence each step (no cache involved)."""
    tokens, logprobs = [], []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + tokens])).logits[0, -1]
        token = int(logits.argmax())
        if token in eos:
            break
        tokens.append(token)
        logprobs.append(float(torch.log_softmax(logits.float(), -1)[token]))
    return tokens, logprobs


def test_a_prefix_of_the_bases_own_keys_decodes_like_those_tokens_in_front(tiny_llama, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_llama).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    prefix_ids, kv = _own_prefix(model, tokenizer)
    adapter = str(write_prefix_adapter(tmp_path / "own-prefix", tiny_llama, kv))

    engine = Engine(str(tiny_llama), quant="none", device="cpu")
    spy = ForwardSpy(engine.model)
    try:
        with warnings.catch_warnings():
            fail_on_old_cache_name()
            # With a base row next to it: different prefix lengths and left padding in one batch.
            results = engine.generate([PROMPT, PROMPT], [adapter, None], max_new_tokens=6, raw=True, logprobs=True)
    finally:
        spy.close()
    name = cache_argument(engine.model)
    other = ({"cache", "past_key_values"} - {name}).pop()
    assert spy.calls and all(name in kw and other not in kw for kw in spy.calls)

    prompt_ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    for ids, result in ((prefix_ids + prompt_ids, results[0]), (prompt_ids, results[1])):
        tokens, logprobs = _greedy(model, ids, 6, engine.eos_ids)
        assert result.token_ids == tokens
        assert max(abs(a - b) for a, b in zip(result.logprobs, logprobs)) < 1e-4
    # The prefix matters (a dropped cache would make the rows equal).
    assert results[0].logprobs != results[1].logprobs


def test_encoder_classification_feeds_the_prefix_to_the_body(tiny_bert, tmp_path):
    torch.manual_seed(0)
    layers, heads, head_dim, n = 2, 4, 8, 3
    kv = [(torch.randn(heads, n, head_dim), torch.randn(heads, n, head_dim)) for _ in range(layers)]
    head = {"base_model.classifier.weight": torch.randn(2, 32), "base_model.classifier.bias": torch.zeros(2)}
    common = {"task": "SEQ_CLS", "head": head, "labels": ["neg", "pos"]}
    a = str(write_prefix_adapter(tmp_path / "p1", tiny_bert, kv, **common))
    b = str(write_prefix_adapter(tmp_path / "p3", tiny_bert, [(3 * k, 3 * v) for k, v in kv], **common))

    engine = Engine(str(tiny_bert), quant="none", device="cpu")
    spy = ForwardSpy(engine.body)
    texts = ["a gripping drama", "a gripping drama", "dull"]
    try:
        with warnings.catch_warnings():
            fail_on_old_cache_name()
            out = engine.classify(texts, [a, b, a])
            alone = engine.classify(texts[:1], [a])
    finally:
        spy.close()
    name = cache_argument(engine.body)
    other = ({"cache", "past_key_values"} - {name}).pop()
    assert spy.calls and all(name in kw and other not in kw for kw in spy.calls)
    # Same head, different prefixes: only a prefix that reached the attention tells them apart.
    p = [row["probabilities"]["pos"] for row in out]
    assert abs(p[0] - p[1]) > 1e-3
    assert abs(alone[0]["probabilities"]["pos"] - p[0]) < 1e-6
