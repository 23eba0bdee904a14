"""``adapters sweep``: the space is checked against the config schema; every finished trial is a
stored version whose lineage holds the sweep, the trial, its values and the objective; NAME@best
is the best of them; the same command continues the same study; pruned trials are not stored and
their runs end "pruned"; two worker processes share one study on a real PostgreSQL server."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from adapters.config import validate
from adapters.errors import ConfigError
from adapters.experiments import sweep as S
from adapters.training.runs import read_events, runs_dir
from adapters_store import Store

from support.config import tiny_config

SPACE = {"training.learning_rate": [1e-3, 3e-2], "lora.r": [2, 4]}


def _config(tiny_bert, sentiment_csv, name="swept", epochs=2):
    return validate(tiny_config(tiny_bert, sentiment_csv, name=name, device="cpu",
                                training={"epochs": epochs, "batch_size": 32, "log_every": 4, "seed": 0,
                                          "learning_rate": 5e-3}))


def test_the_space_is_checked_against_the_config_schema(tiny_bert, sentiment_csv):
    cfg = _config(tiny_bert, sentiment_csv)
    with pytest.raises(ConfigError, match="did you mean 'lora.r'"):
        S.parse_space({"lora.rr": [2, 4]}, cfg)
    with pytest.raises(ConfigError, match="method"):
        S.parse_space({"method": ["lora", "dora"]}, cfg)  # a choice the config refuses
    with pytest.raises(ConfigError, match="low 0.1 >= high 0.01"):
        S.parse_space({"training.learning_rate": {"uniform": [0.1, 0.01]}}, cfg)
    with pytest.raises(ConfigError, match="log range starts above 0"):
        S.parse_space({"training.learning_rate": {"log_uniform": [0, 0.1]}}, cfg)
    with pytest.raises(ConfigError, match="unknown range 'normal'"):
        S.parse_space({"training.learning_rate": {"normal": [0, 1]}}, cfg)
    with pytest.raises(ConfigError, match="greater than or equal to 1"):
        S.parse_space({"lora.r": {"int": [0, 8]}}, cfg)  # the low end is not a valid rank
    params = S.parse_space({"training.learning_rate": {"log_uniform": [1e-4, 1e-2]}, "lora.r": {"int": [2, 8],
                                                                                                "step": 2}}, cfg)
    assert [(p.key, p.kind) for p in params] == [("training.learning_rate", "log_uniform"), ("lora.r", "int")]


@pytest.mark.timeout(600)
def test_finished_trials_are_versions_with_sweep_lineage_and_best_is_the_best(tiny_bert, sentiment_csv, tmp_path):
    cfg = _config(tiny_bert, sentiment_csv)
    params = S.parse_space(SPACE, cfg)
    seen = []
    result = S.run_sweep(cfg, params, SPACE, 3, pruner="none", seed=0, store_root=tmp_path, on_trial=seen.append)
    assert [r.state for r in result.trials] == ["COMPLETE"] * 3 == [r.state for r in seen]
    with Store(tmp_path) as store:
        versions = store.list("swept")
        best = store.resolve("swept@best")
    assert len(versions) == 3
    for version in versions:
        sweep = version.lineage["sweep"]
        trial = next(r for r in result.trials if r.ref == version.ref)
        assert sweep["id"] == result.id and sweep["trial"] == trial.number and sweep["params"] == trial.params
        assert sweep["objective"] == {"metric": "f1_macro", "direction": "maximize",
                                      "value": version.metrics["dev"]["f1_macro"]} and trial.value == sweep[
            "objective"]["value"]
        assert version.lineage["training"]["lora"]["r"] == trial.params["lora.r"]  # trained with its values
    top = max(v.metrics["dev"]["f1_macro"] for v in versions)
    # On a tie the alias stays with the version that reached the value first.
    assert best.metrics["dev"]["f1_macro"] == top == result.best.value

    again = S.run_sweep(cfg, params, SPACE, 4, pruner="none", seed=0, store_root=tmp_path)  # the same sweep
    assert again.id == result.id and [r.number for r in again.trials] == [0, 1, 2, 3]
    assert S.load_sweep(result.id, store_root=tmp_path).trials == again.trials


@pytest.mark.timeout(600)
def test_pruned_trials_are_recorded_not_stored(tiny_bert, sentiment_csv, tmp_path):
    import optuna

    cfg = _config(tiny_bert, sentiment_csv, name="pruned")
    # A pruner whose bar no f1 reaches: every trial stops at its first evaluation.
    result = S.run_sweep(cfg, S.parse_space(SPACE, cfg), SPACE, 2, pruner=optuna.pruners.ThresholdPruner(lower=2.0),
                         store_root=tmp_path)
    assert [r.state for r in result.trials] == ["PRUNED", "PRUNED"] and result.best is None
    with Store(tmp_path) as store:
        assert store.list("pruned") == []
    for row in result.trials:
        events = read_events(runs_dir(tmp_path) / row.run_id / "events.jsonl")
        assert events[-1]["event"] == "end" and events[-1]["status"] == "pruned"
        assert len([e for e in events if e["event"] == "eval" and e["split"] == "dev"]) == 1  # stopped at once


def test_a_trial_is_never_pruned_at_its_last_evaluation(tiny_bert, sentiment_csv, tmp_path):
    """One epoch, one evaluation: it ends the trial either way, so the same pruner lets it finish
    and the adapter is stored."""
    import optuna

    cfg = _config(tiny_bert, sentiment_csv, name="short", epochs=1)
    result = S.run_sweep(cfg, S.parse_space(SPACE, cfg), SPACE, 2, pruner=optuna.pruners.ThresholdPruner(lower=2.0),
                         store_root=tmp_path)
    assert [r.state for r in result.trials] == ["COMPLETE", "COMPLETE"]
    with Store(tmp_path) as store:
        assert [v.number for v in store.list("short")] == [1, 2]


@pytest.mark.timeout(900)
def test_two_workers_share_one_study_on_postgresql(tiny_bert, sentiment_csv, tmp_path, postgres_url):
    config, space = tmp_path / "swept.yaml", tmp_path / "space.yaml"
    config.write_text(yaml.safe_dump(_config(tiny_bert, sentiment_csv).model_dump(mode="json")))
    space.write_text(yaml.safe_dump(SPACE))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "adapters", "sweep", str(config), "--space", str(space), "--trials",
                           "4", "--workers", "2", "--pruner", "none", "--storage", postgres_url, "--store",
                           str(tmp_path / "store"), "--json"], env=env, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    complete = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    assert len(complete) >= 4 and "***" not in postgres_url.split("@")[0]
    assert len({t["worker"] for t in complete}) == 2  # both processes ran trials of the one study
    with Store(tmp_path / "store") as store:
        refs = {v.ref for v in store.list("swept")}
        assert refs == {t["ref"] for t in complete}
        assert store.resolve("swept@best").metrics["dev"]["f1_macro"] == report["best"]["value"]
    shown = subprocess.run([sys.executable, "-m", "adapters", "sweep", "show", report["id"], "--storage",
                            postgres_url, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(shown.stdout)["trials"] == report["trials"]


def test_cli_usage_errors_exit_2_with_a_hint_and_store_nothing(tiny_bert, sentiment_csv, tmp_path, capsys):
    from adapters.cli.main import main

    config = tmp_path / "swept.yaml"
    config.write_text(yaml.safe_dump(_config(tiny_bert, sentiment_csv).model_dump(mode="json")))
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora.rr: [2, 4]\n")
    good = tmp_path / "good.yaml"
    good.write_text("lora.r: [2, 4]\n")
    store = tmp_path / "store"
    cases = [([str(config), "--space", str(bad)], "did you mean 'lora.r'"),
             ([str(config)], "no search space"),
             ([str(config), "--space", str(bad).replace("bad", "missing")], "not found"),
             ([str(config), "--space", str(good), "--pruner", "coin"], "unknown pruner 'coin'"),
             ([str(config), "--space", str(good), "--metric", "bleu"], "'bleu' is not reported"),
             (["show", "no-such-sweep"], "no sweep 'no-such-sweep'")]
    for args, said in cases:
        code = main(["sweep", *args, "--store", str(store)])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err, (args, err)
    assert not (store / "versions").exists()
