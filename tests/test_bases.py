"""Base resolution, quantization plans and the per-device compute dtype."""

import pytest
import torch

from adapters.base.device import plan_device, quantization_config
from adapters.base.resolve import BUILTIN_BASES, list_builtins, resolve_base, weights_fingerprint
from adapters.errors import BaseModelError, DeviceError


def test_builtin_encoder_resolves_to_package_files():
    base = resolve_base("minilm-l6")
    assert base.builtin and (base.path.endswith("model")) and weights_fingerprint(base.path).startswith("sha256:")


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(BaseModelError) as err:
        resolve_base(str(tmp_path / "nope"))
    assert err.value.exit_code == 2 and "not found" in err.value.message


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(BaseModelError) as err:
        resolve_base(str(tmp_path))
    assert "config.json" in err.value.message


def test_unknown_hub_id_fails_at_load_with_a_hint():
    from adapters.base.loading import load_model_config

    with pytest.raises(BaseModelError) as err:
        load_model_config(resolve_base("no-such-org/no-such-model"))
    assert "built-in base" in err.value.hint


@pytest.mark.parametrize("typo, meant", [("minilm-l7", "minilm-l6"), ("smollm2-136m", "smollm2-135m"),
                                         ("minilm", "minilm-l6")])
def test_a_near_miss_of_a_builtin_name_suggests_it(typo, meant):
    with pytest.raises(BaseModelError) as err:
        resolve_base(typo)
    assert err.value.message == f"unknown base model '{typo}'; did you mean '{meant}'?"
    assert err.value.exit_code == 2


def test_offline_hub_id_outside_the_cache_is_refused_before_loading(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BaseModelError) as err:
        resolve_base("gpt2")
    assert "hub is offline" in err.value.message and "built-in base" in err.value.hint


def test_hub_id_in_the_local_cache_resolves_offline(monkeypatch, tmp_path):
    """A model downloaded earlier (the hub cache layout) loads offline, near miss or not."""
    import huggingface_hub.constants

    repo = tmp_path / "models--minilm-l7"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    base = resolve_base("minilm-l7")
    assert (base.id, base.path, base.builtin) == ("minilm-l7", "minilm-l7", False)


def test_list_builtins_reports_installation():
    rows = {r["name"]: r for r in list_builtins()}
    assert set(rows) == set(BUILTIN_BASES) and rows["minilm-l6"]["installed"]


def test_cuda_without_gpu_is_a_usage_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceError) as err:
        plan_device("cuda")
    assert err.value.exit_code == 2 and "GPU" in err.value.message


def test_cpu_plan_uses_fp32_without_native_bf16():
    from adapters.base.device import cpu_has_fast_bf16

    plan = plan_device("cpu")
    assert plan.device == "cpu"
    assert plan.compute_dtype == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)


def test_4bit_is_nf4_double_quant_with_heads_skipped():
    q = quantization_config("4bit", plan_device("cpu"), ["classifier"])
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.llm_int8_skip_modules == ["classifier"]
    assert quantization_config("none", plan_device("cpu"), []) is None


def test_head_modules_are_derived_per_architecture(tiny_bert, tiny_llama):
    from adapters.base.loading import head_modules, load_model_config

    bert, llama = (load_model_config(resolve_base(str(path))) for path in (tiny_bert, tiny_llama))
    assert head_modules("classification", bert) == ["classifier", "bert.pooler"]
    assert head_modules("token-classification", bert) == ["classifier"]
    assert head_modules("classification", llama) == ["score"]
    assert head_modules("causal-lm", llama) == []
