"""Bad input through the real CLI: a clear message, exit code 2, and nothing written (no output,
no stored version, nothing under runs/). A crash once training has started is another matter:
its log is kept, ended as failed, listed as failed, and --resume continues it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from adapters.cli.main import main

from support.config import tiny_config


def _write_config(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(args, capsys):
    code = main([str(a) for a in args])
    return code, capsys.readouterr()


def _nothing_written(tmp_path: Path, home: Path) -> bool:
    """No --output directory, no stored version, and no run directory (not even an empty one)."""
    out = tmp_path / "out"
    stored = list((home / "versions").rglob("adapter_config.json")) if (home / "versions").exists() else []
    runs = list((home / "runs").iterdir()) if (home / "runs").exists() else []
    assert not out.exists() and not stored and not runs, (out.exists(), stored, runs)
    return True


CASES = {
    "missing data file": (lambda d: {"data": {"source": str(d.parent / "missing.csv")}}, "not found"),
    "missing column": (lambda d: {"data": {"source": str(d), "text_column": "body", "label_column": "sentiment"}},
                       "body"),
    "unknown base": (lambda d: {"base": "no-such-org/no-such-model"}, "no-such-org/no-such-model"),
    "unknown config key": (lambda d: {"trainig": {"epochs": 1}}, "did you mean 'training'"),
    "prefix with gradient checkpointing": (lambda d: {"method": "prefix",
                                                      "training": {"gradient_checkpointing": True}},
                                           "gradient checkpointing"),
    "unknown built-in dataset": (lambda d: {"data": {"source": "builtin:nope"}}, "builtin:rotten-tomatoes"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_training_input(case, tiny_bert, sentiment_csv, tmp_path, capsys, _isolated_home):
    change, expected = CASES[case]
    cfg = tiny_config(tiny_bert, sentiment_csv, **change(sentiment_csv))
    code, out = _run(["train", _write_config(tmp_path, cfg), "--output", tmp_path / "out", "-q"], capsys)
    assert code == 2, out.err
    assert "error:" in out.err and expected in out.err and "hint:" in out.err
    assert _nothing_written(tmp_path, _isolated_home)


def test_label_column_with_one_class(tiny_bert, tmp_path, capsys, _isolated_home):
    data = tmp_path / "one.csv"
    data.write_text("review,sentiment\n" + "".join(f"text {i},fresh\n" for i in range(30)))
    cfg = tiny_config(tiny_bert, data)
    code, out = _run(["train", _write_config(tmp_path, cfg), "--output", tmp_path / "out"], capsys)
    assert code == 2 and ("one class" in out.err.lower() or "only one" in out.err.lower()), out.err
    assert _nothing_written(tmp_path, _isolated_home)


def test_empty_split(tiny_bert, tmp_path, capsys, _isolated_home):
    data = tmp_path / "empty.csv"
    data.write_text("review,sentiment\n")
    code, out = _run(["train", _write_config(tmp_path, tiny_config(tiny_bert, data)), "--output",
                      tmp_path / "out"], capsys)
    assert code == 2 and "empty" in out.err
    assert _nothing_written(tmp_path, _isolated_home)


def test_bad_yaml(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [x\n")
    code, out = _run(["train", path], capsys)
    assert code == 2 and "not valid YAML" in out.err


def test_missing_config_file(tmp_path, capsys):
    code, out = _run(["train", tmp_path / "nope.yaml"], capsys)
    assert code == 2 and "not found" in out.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(tiny_bert, sentiment_csv, tmp_path, capsys, _isolated_home):
    cfg = tiny_config(tiny_bert, sentiment_csv, device="cuda")
    code, out = _run(["train", _write_config(tmp_path, cfg), "--output", tmp_path / "out"], capsys)
    assert code == 2 and "CUDA" in out.err and "device: auto" in out.err
    assert _nothing_written(tmp_path, _isolated_home)


def test_bad_override(tmp_path, capsys):
    cfg = Path(__file__).resolve().parent.parent / "configs" / "rt-minilm-lora.yaml"
    code, out = _run(["train", cfg, "--set", "training.epochs"], capsys)
    assert code == 2 and "KEY=VALUE" in out.err


@pytest.mark.parametrize("args, shows", [(["--help"], "train"), (["doctor", "--help"], "--json")])
def test_help_does_not_import_torch(args, shows):
    code = (f"import sys; from adapters.cli.main import main; rc = main({args!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert shows in proc.stdout


def test_models_lists_builtins(capsys):
    code, out = _run(["models"], capsys)
    assert code == 0 and "minilm-l6" in out.out and "smollm2-135m" in out.out


def test_a_crash_mid_run_keeps_its_log_ended_as_failed_and_stores_nothing(tiny_bert, sentiment_csv, tmp_path,
                                                                          capsys, monkeypatch, _isolated_home):
    from adapters.training import trainer
    from adapters.training.runs import read_events
    from adapters_store import Store
    from adapters_tui.runs import RunWatcher

    evaluations = []
    real_after_eval = trainer.Trainer._after_eval

    def crash_on_the_second_evaluation(self, *args, **kwargs):
        evaluations.append(self)
        if len(evaluations) == 2:
            raise RuntimeError("disk on fire")
        return real_after_eval(self, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "_after_eval", crash_on_the_second_evaluation)
    cfg = tiny_config(tiny_bert, sentiment_csv, name="crashy", data={"max_length": 32},
                      training={"max_steps": 12, "eval_every": 4, "batch_size": 8, "log_every": 1})
    config = _write_config(tmp_path, cfg)
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["train", str(config), "--output", str(tmp_path / "out"), "-q"])

    (run_dir,) = list((_isolated_home / "runs").iterdir())
    events = read_events(run_dir / "events.jsonl")
    assert events[0]["event"] == "start" and [e["step"] for e in events if e["event"] == "checkpoint"] == [4]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "failed" and events[-1]["error"] == "disk on fire"
    assert not (tmp_path / "out").exists() and not (run_dir / "adapter").exists()
    with Store(_isolated_home) as s:
        assert s.list() == []
    watcher = RunWatcher(_isolated_home / "runs")
    watcher.poll()
    run = watcher.runs[run_dir.name]
    assert (run.name, run.status, run.step, run.error) == ("crashy", "failed", 8, "disk on fire")
    assert run.display_status(events[-1]["time"] + 3600) == "failed"

    # Failed mid-run, it is what --resume picks up, from its checkpoint; then it is listed as finished.
    # As if killed between a checkpoint save's two renames: only checkpoint.old is whole.
    (run_dir / "checkpoint").rename(run_dir / "checkpoint.old")
    monkeypatch.setattr(trainer.Trainer, "_after_eval", real_after_eval)
    code, out = _run(["train", config, "--resume", "-q", "--json"], capsys)
    assert code == 0, out.err
    assert json.loads(out.out)["ref"] == "crashy@1"
    assert [e["resumed_from"] for e in read_events(run_dir / "events.jsonl") if e["event"] == "start"] == [None, 4]
    assert (run_dir / "checkpoint" / "state.pt").is_file() and not (run_dir / "checkpoint.old").exists()
    watcher.poll()
    assert watcher.runs[run_dir.name].status == "finished" and watcher.runs[run_dir.name].error is None
