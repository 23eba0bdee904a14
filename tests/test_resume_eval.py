"""Interrupted runs resume from their last checkpoint; `adapters eval` scores any dataset."""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from adapters.cli import main
from adapters.runlog import read_events
from conftest import tiny_config


def test_resume_after_sigkill(tiny_bert, sentiment_csv, tmp_path, _isolated_home):
    cfg = tiny_config(tiny_bert, sentiment_csv, name="resumable",
                      training={"epochs": 3, "batch_size": 4, "eval_every": 5, "log_every": 1, "seed": 0})
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, ADAPTERS_HOME=str(_isolated_home))
    proc = subprocess.Popen([sys.executable, "-m", "adapters.cli", "train", str(config), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = _isolated_home / "runs"
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list(runs.glob("*-resumable-*")) if runs.exists() else []
        run_dir = found[0] if found else tmp_path / "not-yet"
        if any(e["event"] == "checkpoint" and e["step"] >= 10 for e in read_events(run_dir / "events.jsonl")):
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpointed = max(e["step"] for e in read_events(run_dir / "events.jsonl") if e["event"] == "checkpoint")
    assert not (run_dir / "adapter").exists()

    code = main(["train", str(config), "--resume", "-q"])
    assert code == 0
    events = read_events(run_dir / "events.jsonl")
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from"] == checkpointed
    steps = [e["step"] for e in events if e["event"] == "step"]
    resumed = steps[steps.index(checkpointed + 1, len([s for s in steps if s <= checkpointed])):]
    assert resumed[0] == checkpointed + 1 and resumed[-1] == starts[0]["total_steps"]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "finished"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_resume_with_nothing_to_resume(tiny_bert, sentiment_csv, tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_bert, sentiment_csv, name="fresh-name")))
    assert main(["train", str(config), "--resume"]) == 2
    assert "no interrupted run" in capsys.readouterr().err


def test_eval_scores_another_dataset_with_the_adapter_labels(tiny_bert, sentiment_csv, tmp_path, capsys):
    import adapters

    result = adapters.train(tiny_config(tiny_bert, sentiment_csv), output=tmp_path / "out")
    other = tmp_path / "other.jsonl"
    # Other column names, and only one of the two labels present: ids must still follow the adapter's.
    other.write_text("".join(json.dumps({"body": f"a dull film {i}", "y": "rotten"}) + "\n" for i in range(20)))
    code = main(["eval", str(result.output_dir), "--data", str(other), "--split", "all",
                 "--set", "data.text_column=body", "--set", "data.label_column=y", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    metrics = json.loads(out)
    assert metrics["rows"] == 20
    assert sum(metrics["confusion_matrix"][1]) == 20 and sum(metrics["confusion_matrix"][0]) == 0
