"""The engine's LoRA slot bank reads peft's saved matrices with peft's own scaling rules."""

from __future__ import annotations

import json

import pytest
import torch

from adapters.runtime.lora import LoraBank, LoraFitError, lora_matrices


def test_scaling_follows_peft_for_rslora_and_patterns(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = LoraConfig(r=4, lora_alpha=8, use_rslora=True, rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 16},
                        target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), config)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    ours = lora_matrices(load_file(str(tmp_path / "adapter_model.safetensors")), saved)
    layers = {name.removeprefix("base_model.model."): m for name, m in model.named_modules()
              if isinstance(m, LoraLayer)}
    assert set(ours) == set(layers)
    for name, (a, b_scaled) in ours.items():
        layer = layers[name]
        assert torch.equal(a, layer.lora_A["default"].weight)
        assert torch.allclose(b_scaled, layer.lora_B["default"].weight * layer.scaling["default"])
    assert ours["model.layers.0.self_attn.q_proj"][0].shape[0] == 2  # rank_pattern


def test_a_lora_that_does_not_fit_changes_nothing(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    bank = LoraBank(model, torch.device("cpu"))
    good = {"model.layers.0.self_attn.q_proj": (torch.ones(2, 64), torch.ones(64, 2))}
    with pytest.raises(LoraFitError, match="no linear layer"):
        bank.add("x", {**good, "model.layers.9.self_attn.q_proj": (torch.ones(2, 64), torch.ones(64, 2))})
    with pytest.raises(LoraFitError, match="64->64 here"):
        bank.add("x", {"model.layers.0.self_attn.q_proj": (torch.ones(2, 32), torch.ones(64, 2))})
    assert not bank.names and not bank.layers
    bank.add("a", good)
    bank.add("b", good)
    bank.remove("a")
    assert bank.names == {"b"} and bank.nbytes() == bank.nbytes("b") == 2 * (64 + 64) * 4


def test_rows_of_each_rank_bucket_get_their_own_lora(tiny_llama):
    """One hooked layer, rows on adapters of ranks 1, 3 (held at 4) and 5 (held at 8) and a row on
    none: each row's output is the layer's plus x @ A.T @ B.T of its own adapter, computed here."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    bank = LoraBank(model, torch.device("cpu"))
    layer = model.get_submodule("model.layers.0.self_attn.q_proj")
    g = torch.Generator().manual_seed(0)
    mats = {name: (torch.randn(r, 64, generator=g), torch.randn(64, r, generator=g))
            for name, r in (("one", 1), ("three", 3), ("five", 5))}
    for name, ab in mats.items():
        bank.add(name, {"model.layers.0.self_attn.q_proj": ab})
    assert {n: bank.layers["model.layers.0.self_attn.q_proj"].matrices[n][0].shape[1] for n in mats} == \
        {"one": 1, "three": 4, "five": 8}
    x = torch.randn(5, 3, 64, generator=g)
    names = ["five", None, "one", "three", "five"]
    with torch.no_grad(), bank.routed(names):
        got = layer(x)
    with torch.no_grad():
        plain = layer(x)
    for row, name in enumerate(names):
        want = plain[row] if name is None else plain[row] + x[row] @ mats[name][0].T @ mats[name][1].T
        assert torch.allclose(got[row], want, atol=1e-5), name
