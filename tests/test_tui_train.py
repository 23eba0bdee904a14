"""The Train tab under Pilot: a real ``adapters train`` subprocess on a tiny BERT, watched through
its event log to completion and into the store; keys answered while a run goes on; cancel; a
run started outside the TUI (from its log alone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adapters_store import Store
from adapters_tui.modals import ConfirmModal

from support.config import tiny_config
from support.tui import FIXED_NOW, SNAPSHOT_CONFIGS, demo_app, pilot_test, shown_text, wait_until, write_run

SIZE = (120, 40)


def write_config(directory: Path, base: Path, data: Path, name: str, max_steps: int) -> Path:
    training = {"epochs": 1, "max_steps": max_steps, "batch_size": 8, "eval_batch_size": 48,
                "learning_rate": 5e-3, "log_every": 1, "seed": 0}
    cfg = tiny_config(base, data, name=name, training=training)
    cfg["data"] = {**cfg["data"], "max_length": 32}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _has_curve(plot) -> bool:
    """Whether a plot draws a line (braille dots) rather than only its axes."""
    return any("\u2800" < ch <= "\u28ff" for ch in plot.render().plain)


async def _launch_first_config(pilot):
    """Choose the first config, launch it (ctrl+l) and wait for its run: (the Train pane, run id)."""
    await _pick_first_config(pilot)
    await pilot.press("ctrl+l")
    train = pilot.app.train
    await wait_until(pilot, lambda: train.runs, what="the run to appear")
    return train, next(iter(train.runs))


async def _pick_first_config(pilot) -> None:
    """On the Train tab: choose the first config in the list (Enter), wait for the form."""
    app = pilot.app
    options = app.train.query_one("#config-list")
    await wait_until(pilot, lambda: options.option_count > 0 and app.focused is options, what="the config list")
    await pilot.press("enter")
    form = app.train.query_one("#config-form")
    await wait_until(pilot, lambda: form.resolved is not None, what="the form to fill")


@pilot_test
async def test_launch_to_completion_shows_the_new_version(tmp_path, _isolated_home, tiny_bert, sentiment_csv):
    write_config(tmp_path / "configs", tiny_bert, sentiment_csv, "tui-tiny", max_steps=3)
    app = demo_app(_isolated_home, configs_dir=tmp_path / "configs", initial_tab="train", poll_interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await _pick_first_config(pilot)
        form = app.train.query_one("#config-form")
        form.set_value("training.learning_rate", 0.01)  # a changed field becomes a --set override
        await pilot.press("ctrl+l")
        train = app.train
        await wait_until(pilot, lambda: train.runs and train.query_one("#train-tabs").active == "train-runs",
                         what="the run to appear")
        run_id = next(iter(train.runs))
        await wait_until(pilot, lambda: train.runs[run_id].ref is not None, timeout=240,
                         what="the run to finish and be stored")
        run = train.runs[run_id]
        assert run.status == "finished" and run.ref == "tui-tiny@1"
        assert run.step == 3 and [s for s, _ in run.losses] == [1, 2, 3]
        assert any(e["split"] == "test" for e in run.evals)
        # The finished run stays on screen with its curves: nothing switches tabs by itself.
        await pilot.pause(0.3)
        assert app.query_one("#tabs").active == "train"
        assert train.query_one("#train-tabs").active == "train-runs" and train.shown_run == run_id
        title = shown_text(train.query_one("#run-title"))
        assert "finished" in title and "tui-tiny@1" in title
        assert _has_curve(train.query_one("#loss-plot"))
        assert "test" in shown_text(train.query_one("#run-metrics"))
        store = app.store
        await wait_until(pilot, lambda: [r.name for r in store.rows] == ["tui-tiny"], what="the Store to reload")

        await pilot.press("o")  # opening the version is the user's choice
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "store" and store.selected is not None
                         and store.selected.ref == "tui-tiny@1", what="the new version in the Store")
    with Store(_isolated_home) as s:
        version = s.resolve("tui-tiny@1")
    assert version.run_id == run_id
    assert version.lineage["training"]["training"]["learning_rate"] == 0.01


@pilot_test
async def test_keys_answered_while_training_then_cancel(tmp_path, _isolated_home, tiny_bert, sentiment_csv):
    write_config(tmp_path / "configs", tiny_bert, sentiment_csv, "tui-long", max_steps=100_000)  # runs until cancelled
    app = demo_app(_isolated_home, configs_dir=tmp_path / "configs", initial_tab="train", poll_interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        train, run_id = await _launch_first_config(pilot)
        process = train.processes[run_id]
        await wait_until(pilot, lambda: train.runs[run_id].step >= 2, timeout=120, what="training steps")

        tabs = app.query_one("#tabs")
        step_before = train.runs[run_id].step
        await pilot.press("1")
        assert tabs.active == "store"
        await pilot.press("3")
        assert tabs.active == "playground"
        await pilot.press("2")
        assert tabs.active == "train"
        assert process.running  # the keys were answered while the subprocess trained
        await wait_until(pilot, lambda: train.runs[run_id].step > step_before, what="the run to keep going")
        # The tab takes the focus once it is drawn (a user sees that before typing on)
        await wait_until(pilot, lambda: app.focused is not None and train in app.focused.ancestors_with_self,
                         what="the focus on the Train tab")

        await pilot.press("r")  # the Runs view, then cancel the selected run
        await wait_until(pilot, lambda: app.focused is app.query_one("#runs-table"), what="the runs table")
        await pilot.press("c")  # one key asks; it does not cancel
        assert isinstance(app.screen, ConfirmModal) and "tui-long" in app.screen.question
        await pilot.press("enter")  # the dialog starts on "Keep training"
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmModal), what="the dialog to close")
        step_before = train.runs[run_id].step
        await wait_until(pilot, lambda: train.runs[run_id].step > step_before, what="the run to go on after 'keep'")
        assert process.running and not process.cancelled
        await pilot.press("c")
        await pilot.press("escape")  # Escape keeps it too
        await pilot.pause()
        assert process.running and not process.cancelled
        await pilot.press("c")
        await pilot.click("#confirm-yes")
        try:
            await wait_until(pilot, lambda: train.runs[run_id].status == "cancelled" and not process.running,
                             timeout=60, what="the run to be cancelled")
        except AssertionError as exc:
            log = (train.runs[run_id].run_dir / "events.jsonl").read_text().splitlines()[-2:]
            raise AssertionError(f"{exc}; status {train.runs[run_id].status}, exit {process.process.poll()}, "
                                 f"cancel sent {process.cancelled}, shown {train.shown_run == run_id}, "
                                 f"log {log}") from None
    events = [json.loads(line) for line in (train.runs[run_id].run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "cancelled"
    with Store(_isolated_home) as s:
        assert s.list() == []


@pilot_test
async def test_a_launch_refused_for_bad_data_is_listed_failed_and_leaves_no_run(tmp_path, _isolated_home, tiny_bert,
                                                                                sentiment_csv):
    """The CLI refuses the config before training starts (a column the data lacks): the TUI shows
    its message and lists the run as failed, and nothing is left under runs/ or in the store."""
    path = write_config(tmp_path / "configs", tiny_bert, sentiment_csv, "tui-bad", max_steps=3)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["label_column"] = "no_such_column"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    app = demo_app(_isolated_home, configs_dir=tmp_path / "configs", initial_tab="train", poll_interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        train, run_id = await _launch_first_config(pilot)
        await wait_until(pilot, lambda: train.runs[run_id].status == "failed", timeout=120,
                         what="the refused run to be marked failed")
        assert "no_such_column" in train.runs[run_id].error
        await wait_until(pilot, lambda: "no_such_column" in str(getattr(app.screen, "message", "")),
                         what="the CLI's message on screen")
        runs = _isolated_home / "runs"
        assert not runs.exists() or list(runs.iterdir()) == []
    with Store(_isolated_home) as s:
        assert s.list() == []


@pilot_test
async def test_attaches_to_a_run_started_elsewhere(_isolated_home):
    runs = _isolated_home / "runs"
    app = demo_app(_isolated_home, initial_tab="train", clock=lambda: FIXED_NOW, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        train = app.train
        # A CLI run appears while the TUI is open, with half its steps logged so far.
        run_dir = write_run(runs, "20250601-115900-cli-run-aaaaaa", "cli-run", FIXED_NOW - 50, 10, 20, False)
        await wait_until(pilot, lambda: "20250601-115900-cli-run-aaaaaa" in train.runs, what="discovery")
        run = train.runs[run_dir.name]
        assert run.status == "running" and run.step == 10 and run.total_steps == 20
        assert run.eta(FIXED_NOW) == 20.0  # 10 steps in 20 s, 10 to go
        with open(run_dir / "events.jsonl", "a") as fh:
            fh.write(json.dumps({"event": "step", "time": FIXED_NOW - 28, "step": 11, "epoch": 1.1,
                                 "loss": 0.3, "lr": 1e-4, "tokens_per_s": 900.0}) + "\n")
            fh.write(json.dumps({"event": "end", "time": FIXED_NOW - 27, "status": "failed",
                                 "error": "out of memory"}) + "\n")
        await wait_until(pilot, lambda: train.runs[run_dir.name].status == "failed", what="the end event")
        assert train.runs[run_dir.name].step == 11 and train.runs[run_dir.name].error == "out of memory"
        await pilot.press("c")  # not ours: the TUI says so instead of pretending
        assert not train.processes


@pilot_test
async def test_choosing_another_config_asks_before_dropping_edits():
    app = demo_app(initial_tab="train")
    async with app.run_test(size=SIZE) as pilot:
        train = app.train
        form = train.query_one("#config-form")
        options = train.query_one("#config-list")
        await wait_until(pilot, lambda: len(train.configs) == 5 and app.focused is options, what="the configs")
        await pilot.press("enter")  # chat-prefix.yaml, the first
        await wait_until(pilot, lambda: form.resolved is not None, what="the form")
        assert form.values()["name"] == "chat-prefix" and not form.edited()
        form.set_value("name", "my-chat")
        await pilot.pause()
        assert form.edited()

        await pilot.press("down", "enter")  # sentiment-lora.yaml: the edit would be lost
        assert isinstance(app.screen, ConfirmModal) and "chat-prefix" in app.screen.question
        await pilot.press("enter")  # starts on "Keep editing"
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal) and form.values()["name"] == "my-chat"

        await pilot.press("enter")
        await pilot.click("#confirm-yes")
        await wait_until(pilot, lambda: form.resolved and form.values()["name"] == "sentiment-lora",
                         what="the other config in the form")
        assert form.source == SNAPSHOT_CONFIGS / "sentiment-lora.yaml" and not form.edited()


@pilot_test
async def test_started_outside_the_repository_it_trains_from_a_stored_config(tmp_path, _isolated_home, tiny_bert,
                                                                            sentiment_csv, monkeypatch):
    """No ./configs where the TUI starts: the example configs shipped with the package and the
    stored versions' training configs are listed, and a stored one trains a new version (the same
    name, the next number)."""
    from adapters_tui.app import default_configs_dir

    from support.server import train_into_store

    ref = train_into_store(_isolated_home, "tui-stored", tiny_bert, sentiment_csv, 1)
    monkeypatch.chdir(tmp_path)  # no configs/ here
    app = demo_app(_isolated_home, configs_dir=None, initial_tab="train", poll_interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        train = app.train
        options = train.query_one("#config-list")
        await wait_until(pilot, lambda: any(e.ref for e in train.configs) and app.focused is options,
                         what="the stored configs")
        assert app.configs_dir == default_configs_dir() and (app.configs_dir / "rt-minilm-lora.yaml").is_file()
        assert [(e.ref, e.name) for e in train.configs if e.ref] == [(ref, "tui-stored")]
        assert any(e.name == "rt-minilm-lora" for e in train.configs)
        stored = next(e for e in train.configs if e.ref == ref)
        options.highlighted = options.get_option_index(stored.key)  # below a "from the store" heading
        await pilot.press("enter")
        form = train.query_one("#config-form")
        await wait_until(pilot, lambda: form.resolved is not None, what="the form")
        assert form.retrain_ref == ref and form.values()["name"] == "tui-stored"
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: train.runs, what="the run")
        run_id = next(iter(train.runs))
        await wait_until(pilot, lambda: train.runs[run_id].ref is not None, timeout=240, what="the new version")
        assert train.runs[run_id].ref == "tui-stored@2"
        await wait_until(pilot, lambda: [e.ref for e in train.configs if e.ref] == ["tui-stored@2"],
                         what="the list to offer the newest version's config")


@pilot_test
async def test_an_empty_store_says_how_to_get_a_first_adapter(tmp_path, _isolated_home, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "no-configs").mkdir()  # --configs at a folder without any: nothing to list either
    app = demo_app(_isolated_home, configs_dir=tmp_path / "no-configs")
    async with app.run_test(size=(100, 30)) as pilot:
        guide = app.query_one("#store-empty")
        await wait_until(pilot, lambda: guide.display, what="the Store's first steps")
        await pilot.pause()
        assert "adapters train configs/rt-minilm-lora.yaml" in shown_text(guide)
        assert guide.region.width > 0 and guide.region.height > 4  # on screen, not squeezed away
        await pilot.press("2")
        form = app.train.query_one("#config-form")
        source = form.query_one("#form-source")
        await wait_until(pilot, lambda: "first adapter" in shown_text(source), what="the Train tab's first steps")
        text = shown_text(source)
        assert "adapters train configs/rt-minilm-lora.yaml" in text and "--configs DIR" in text
        assert not any(row.display for row in form.query(".form-row"))  # no empty form to fill


@pilot_test
async def test_a_store_with_versions_shows_no_first_steps():
    app = demo_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(app.store.rows) == 4, what="the store")
        assert not app.query_one("#store-empty").display


@pytest.mark.timeout(30, func_only=True)  # the child sleeps 60 s: waiting it out instead of killing it times out
def test_a_run_that_ignores_the_interrupt_is_killed_and_its_log_ended(tmp_path):
    import sys

    from adapters_tui.runs import TrainingProcess

    ignores = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); "
               "time.sleep(60)")
    process = TrainingProcess([sys.executable, "-c", ignores], tmp_path / "run")
    process.start()
    assert process.process.stdout.readline().strip() == "up"
    process.cancel(grace_s=1.0)
    assert not process.running
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "cancelled"
    assert process.wait().error == "cancelled"

