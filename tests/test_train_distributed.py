"""Training across processes: ``torchrun --nproc_per_node 2 -m adapters train`` (two gloo processes
on the CPU) against one process with the same global batch. Each process takes its share of
every global batch, so both take the same optimizer steps over the same rows and end at the same
weights; one run log, one stored version, one report."""

import json
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import yaml

import adapters
from adapters.training.runs import read_events, runs_dir
from adapters_store import Store

from support.config import tiny_config


@pytest.fixture(scope="module")
def still_bert(tiny_bert, tmp_path_factory):
    """tiny_bert without dropout: the two runs can then be compared weight for weight."""
    path = tmp_path_factory.mktemp("still-bert") / "bert"
    shutil.copytree(tiny_bert, path)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return path


def _config(base, data, batch_size: int) -> dict:
    return tiny_config(base, data, name="dist", device="cpu", lora={"r": 4, "alpha": 8, "dropout": 0.0},
                       training={"epochs": 1, "batch_size": batch_size, "learning_rate": 5e-3, "log_every": 1,
                                 "seed": 0})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(adapter_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def _torchrun(tmp_path, *args: str) -> list[dict]:
    """``adapters ARGS --json`` in two gloo processes; the JSON reports printed."""
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(_free_port()), "-m", "adapters", *args, "--json"]
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.timeout(600)
def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(still_bert, sentiment_csv, tmp_path):
    single = adapters.train(_config(still_bert, sentiment_csv, 16), store_root=tmp_path / "one", progress=False)

    config = tmp_path / "dist.yaml"
    config.write_text(yaml.safe_dump(_config(still_bert, sentiment_csv, 8)))
    reports = _torchrun(tmp_path, "train", str(config), "--store", str(tmp_path / "two"))
    assert len(reports) == 1  # one process reports for both

    with Store(tmp_path / "two") as store:
        assert [v.ref for v in store.list("dist")] == ["dist@1"] == [reports[0]["ref"]]
        stored = store.path("dist@1")
    (run,) = runs_dir(tmp_path / "two").iterdir()  # one run directory for the two processes
    two_events, one_events = read_events(run / "events.jsonl"), read_events(single.run_dir / "events.jsonl")

    def steps(events):
        return [e for e in events if e["event"] == "step"]

    start = next(e for e in two_events if e["event"] == "start")
    assert start["total_steps"] == next(e for e in one_events if e["event"] == "start")["total_steps"] == 12
    assert [e["step"] for e in steps(two_events)] == [e["step"] for e in steps(one_events)]  # logged once each
    # Same rows per step: the losses (averaged over the processes) follow the single run's.
    assert [e["loss"] for e in steps(two_events)] == pytest.approx([e["loss"] for e in steps(one_events)],
                                                                   abs=1e-4)
    ours, theirs = _weights(stored), _weights(single.output_dir)
    assert set(ours) == set(theirs)
    for key in ours:
        assert torch.allclose(ours[key], theirs[key], atol=1e-5), key
    assert reports[0]["metrics"]["test"]["accuracy"] == pytest.approx(single.metrics["test"]["accuracy"])


@pytest.mark.timeout(600)
def test_distillation_across_processes_matches_one_process(still_bert, sentiment_csv, tmp_path):
    """The teacher's probabilities (computed by the main process, handed to the other) reach both
    processes' shares of every batch: the two end where one process with the same global batch
    ends, with one stored student and one report."""
    from adapters.experiments.distill import distill

    store = tmp_path / "store"
    teacher = adapters.train(_config(still_bert, sentiment_csv, 16) | {"name": "teacher"}, store_root=store,
                             progress=False)
    single = distill(_config(still_bert, sentiment_csv, 16), teacher=teacher.ref, alpha=0.8, store=False,
                     store_root=store, output=tmp_path / "single", run_dir=tmp_path / "run-single", progress=False)
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(_config(still_bert, sentiment_csv, 8)))
    reports = _torchrun(tmp_path, "distill", "--teacher", teacher.ref, "--config", str(config), "--alpha", "0.8",
                        "--store", str(store))
    assert len(reports) == 1 and reports[0]["distill"]["teacher"]["pinned"] == "teacher@1"
    with Store(store) as s:
        assert [v.ref for v in s.list("dist")] == ["dist@1"] == [reports[0]["ref"]]
        ours, theirs = _weights(s.path("dist@1")), _weights(single.output_dir)
    for key in theirs:
        assert torch.allclose(ours[key], theirs[key], atol=1e-5), key
