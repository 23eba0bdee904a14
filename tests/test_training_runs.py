"""Run directories on disk, without training: how a run is named and found again for ``--resume``
(adapters/training/runs.py), whichever of the CLI, the API or the TUI started it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from adapters.training.runs import EVENTS_FILE, RUN_ID, latest_unfinished_run, new_run_id, run_name, runs_dir
from adapters_tui.runs import new_run_dir


def _run(runs: Path, name: str, started: float, *, end: str | None = None, checkpoint: bool = True,
         logged_name: bool = True) -> Path:
    """A run directory as the trainer leaves it: its log, and (if it got to one) a checkpoint."""
    run = runs / new_run_id(name, started)
    run.mkdir(parents=True)
    events = [{"event": "start", "time": started, **({"name": name} if logged_name else {})}]
    if end:
        events.append({"event": "end", "time": started + 1, "status": end})
    (run / EVENTS_FILE).write_text("".join(json.dumps(e) + "\n" for e in events))
    if checkpoint:
        (run / "checkpoint").mkdir()
        (run / "checkpoint" / "trainer.json").write_text("{}")
        (run / "checkpoint" / "state.pt").write_bytes(b"")
    return run


def test_a_run_id_names_its_adapter_and_sorts_by_start_time():
    earlier, later = new_run_id("rt-minilm-lora", 1_700_000_000), new_run_id("rt-minilm-lora", 1_700_000_061)
    assert RUN_ID.fullmatch(earlier)["name"] == "rt-minilm-lora"
    assert earlier < later
    assert run_name(Path(earlier), []) == "rt-minilm-lora"  # from the id when the log names none
    assert run_name(Path("notes"), []) is None
    assert run_name(Path("notes"), [{"event": "start", "name": "x"}]) == "x"


def test_the_tui_names_its_runs_as_the_cli_does(tmp_path):
    run = new_run_dir(tmp_path, "tui-run", now=1_700_000_000)
    assert run.parent == tmp_path
    assert run.name[:15] == new_run_id("tui-run", 1_700_000_000)[:15]
    assert RUN_ID.fullmatch(run.name)["name"] == "tui-run"


def test_resume_takes_the_newest_unfinished_run_of_that_name(_isolated_home):
    runs = runs_dir()
    assert runs == _isolated_home / "runs"
    now = time.time()
    _run(runs, "sent", now - 400, end="failed")
    cancelled = _run(runs, "sent", now - 300, end="cancelled", logged_name=False)
    _run(runs, "sent", now - 200, end="finished")  # finished: nothing to resume
    _run(runs, "sent", now - 100, checkpoint=False)  # killed before its first checkpoint
    other = _run(runs, "sent-v2", now, end="failed")  # another name that starts the same
    foreign = runs / "backup-sent-old"  # not named like a run, though the glob finds it
    (foreign / "checkpoint").mkdir(parents=True)
    for name in ("trainer.json", "state.pt"):
        (foreign / "checkpoint" / name).write_text("")
    assert latest_unfinished_run("sent") == cancelled
    assert latest_unfinished_run("sent-v2") == other
    assert latest_unfinished_run("v2") is None
    assert latest_unfinished_run("other") is None


def test_runs_live_under_the_store_given(tmp_path):
    run = _run(runs_dir(tmp_path / "elsewhere"), "sent", time.time(), end="failed")
    assert latest_unfinished_run("sent", tmp_path / "elsewhere") == run
    assert latest_unfinished_run("sent") is None
