"""Config validation: unknown keys with "did you mean", overrides, YAML errors."""

from pathlib import Path

import pytest

from adapters.config import load_config, to_yaml, validate
from adapters.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


TRAINING_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("serve-"))
SERVE_CONFIGS = sorted(CONFIGS.glob("serve-*.yaml"))


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    # The resolved config round-trips through YAML unchanged.
    assert validate(__import__("yaml").safe_load(to_yaml(cfg))) == cfg


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_shipped_serve_configs_validate(path):
    from adapters.cli.serve import load_serve_config

    cfg = load_serve_config(path, {})
    assert cfg.base and cfg.adapters


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError) as err:
        validate({"name": "x", "base": "minilm-l6", "data": {"source": "a.csv"}, "trainig": {}})
    assert "unknown key 'trainig'" in err.value.message
    assert "did you mean 'training'" in err.value.message


def test_unknown_nested_key_suggests_the_close_one():
    with pytest.raises(ConfigError) as err:
        validate({"name": "x", "base": "b", "data": {"source": "a.csv", "text_colum": "t"}})
    assert "did you mean 'data.text_column'" in err.value.message


def test_overrides_parse_values_as_yaml():
    cfg = load_config(CONFIGS / "rt-minilm-lora.yaml",
                      ["training.epochs=5", "lora.r=4", "lora.target_modules=[query]", "quant=none"])
    assert cfg.training.epochs == 5 and cfg.lora.r == 4 and cfg.lora.target_modules == ["query"]
    assert cfg.quant == "none"


def test_override_without_equals_is_a_usage_error():
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "rt-minilm-lora.yaml", ["training.epochs"])
    assert err.value.exit_code == 2


def test_bad_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "not valid YAML" in err.value.message and "line" in err.value.message


def test_prefix_with_gradient_checkpointing_is_refused():
    with pytest.raises(ConfigError) as err:
        validate({"name": "x", "base": "b", "method": "prefix", "data": {"source": "a.csv"},
                  "training": {"gradient_checkpointing": True}})
    assert "gradient checkpointing" in err.value.message


def test_bad_values_are_explained():
    with pytest.raises(ConfigError) as err:
        validate({"name": "bad/name", "base": "b", "quant": "3bit", "data": {"source": "a.csv"}})
    assert "'name'" in err.value.message and "'quant'" in err.value.message


@pytest.mark.parametrize("value, expected", [("epoch", "epoch"), ("end", "end"), (5, 5), ("5", 5)])
def test_eval_every_takes_epoch_end_or_steps(value, expected):
    cfg = validate({"name": "x", "base": "b", "data": {"source": "a.csv"}, "training": {"eval_every": value}})
    assert cfg.training.eval_every == expected


@pytest.mark.parametrize("value", [0, -3, "ends", True, 2.5])
def test_a_bad_eval_every_is_one_clear_message(value):
    with pytest.raises(ConfigError) as err:
        validate({"name": "x", "base": "b", "data": {"source": "a.csv"}, "training": {"eval_every": value}})
    assert err.value.message.count("eval_every") == 2  # the key once, the rule once: not one line per type
    assert "'epoch', 'end' or a number of optimizer steps >= 1" in err.value.message
