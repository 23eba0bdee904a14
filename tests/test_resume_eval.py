"""Interrupted runs resume from their last checkpoint to the weights an uninterrupted run ends
with; init_from starts from the parent's weights; `adapters eval` scores any dataset."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

import adapters
from adapters.cli.main import main
from adapters.training.runs import read_events
from adapters_tui.runs import RunWatcher

from support.config import tiny_config


def _wait_for_checkpoint(proc, runs, name: str, at_least: int):
    """Poll the run's log until a checkpoint at ``at_least`` or later is logged; return the run dir."""
    while True:
        found = list(runs.glob(f"*-{name}-*")) if runs.exists() else []
        if found and any(e["event"] == "checkpoint" and e["step"] >= at_least
                         for e in read_events(found[0] / "events.jsonl")):
            return found[0]
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)


def _losses(events) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events if e["event"] == "step"}


def _assert_same_tensors(ours: dict, reference: dict, what: str) -> None:
    assert ours.keys() == reference.keys(), what
    for key in reference:
        assert torch.allclose(ours[key], reference[key], rtol=0, atol=1e-6), f"{what}: {key} differs"


@pytest.mark.timeout(300)
def test_resume_after_sigkill_gives_the_uninterrupted_runs_weights(tiny_bert, sentiment_csv, tmp_path,
                                                                     _isolated_home):
    """SIGKILL a real ``adapters train`` mid-epoch, right after a checkpoint; ``--resume`` must end
    where the same seed ends without the kill: the same losses step by step, the same final
    weights and optimizer state, and the same stored adapter."""
    cfg = tiny_config(tiny_bert, sentiment_csv, name="resumable",
                      training={"epochs": 2, "batch_size": 8, "eval_every": 4, "log_every": 1, "seed": 0})
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    reference = adapters.train(config, run_dir=tmp_path / "reference", store=False)

    env = dict(os.environ, ADAPTERS_HOME=str(_isolated_home))
    proc = subprocess.Popen([sys.executable, "-m", "adapters", "train", str(config), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        run_dir = _wait_for_checkpoint(proc, _isolated_home / "runs", "resumable", at_least=8)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = read_events(run_dir / "events.jsonl")
    checkpointed = max(e["step"] for e in killed if e["event"] == "checkpoint")
    total = killed[0]["total_steps"]
    assert killed[-1]["event"] != "end" and checkpointed < total and checkpointed % killed[0]["steps_per_epoch"]
    assert not (run_dir / "adapter").exists()
    # Killed, it logged no end: the run list says failed (its process is gone), not running.
    watcher = RunWatcher(_isolated_home / "runs")
    watcher.poll()
    assert watcher.runs[run_dir.name].status == "failed" and "--resume" in watcher.runs[run_dir.name].error

    assert main(["train", str(config), "--resume", "-q"]) == 0
    events = read_events(run_dir / "events.jsonl")
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from"] == checkpointed
    after = events[events.index(starts[1]):]
    resumed = _losses(after)
    assert sorted(resumed) == list(range(checkpointed + 1, total + 1))
    expected = _losses(read_events(reference.run_dir / "events.jsonl"))
    assert resumed == {step: expected[step] for step in resumed}
    assert events[-1]["event"] == "end" and events[-1]["status"] == "finished"
    watcher.poll()
    assert watcher.runs[run_dir.name].status == "finished" and watcher.runs[run_dir.name].step == total

    # The end of training (the last checkpoint holds the last weights and the optimizer's moments) ...
    ours_state = torch.load(run_dir / "checkpoint" / "state.pt", weights_only=True)
    reference_state = torch.load(reference.run_dir / "checkpoint" / "state.pt", weights_only=True)
    _assert_same_tensors(ours_state["trainable"], reference_state["trainable"], "last weights")
    for ours_p, ref_p in zip(ours_state["optimizer"]["state"].values(), reference_state["optimizer"]["state"].values()):
        _assert_same_tensors(ours_p, ref_p, "optimizer state")
    # ... and the adapter it kept (the best dev step's) and stored.
    from adapters_store import Store

    with Store(_isolated_home) as s:
        versions = s.list()
        assert [v.ref for v in versions] == ["resumable@1"], versions
        stored = s.resolve("resumable@1")
    _assert_same_tensors(load_file(run_dir / "adapter" / "adapter_model.safetensors"),
                         load_file(reference.output_dir / "adapter_model.safetensors"), "saved adapter")
    assert stored.run_id == run_dir.name


def test_init_from_starts_from_the_parents_weights(tiny_bert, sentiment_csv):
    short = {"data": {"max_length": 32}}
    parent = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="parent",
                                        training={"max_steps": 6, "batch_size": 8}, **short))
    # One step at a learning rate far too small to move a weight: the child is where it started.
    child = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="child", init_from="parent@1", **short,
                                       training={"max_steps": 1, "batch_size": 8, "learning_rate": 1e-12,
                                                 "warmup_ratio": 0.0}))
    parents = load_file(parent.output_dir / "adapter_model.safetensors")
    # LoRA's B starts at zero and the head at random: the parent's moved, so a fresh start differs.
    assert all(parents[k].abs().max() > 1e-4 for k in parents if "lora_B" in k)
    _assert_same_tensors(load_file(child.output_dir / "adapter_model.safetensors"), parents, "child weights")
    assert abs(child.metrics["dev"]["loss"] - parent.metrics["dev"]["loss"]) < 1e-5
    assert child.lineage["parent"] == "parent@1"
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
