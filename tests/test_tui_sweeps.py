"""The Sweeps view (a tab of Train) under Pilot on a real sweep: three trials of a tiny BERT run by
adapters.experiments.sweep, listed with their states, objectives and stored versions as the
study holds them; the plot's objectives and best so far; the best version opened in the Store;
the start dialog refusing a missing or empty space file and launching a real ``adapters sweep``
whose sweep then shows up with its trial."""

from __future__ import annotations

import sys

import pytest
import yaml

from adapters.config import validate
from adapters.experiments import sweep as S
from adapters_store import Store
from adapters_tui.modals import HelpScreen
from adapters_tui.sweep_modal import StartSweepModal
from adapters_tui.sweeps import STATES

from support.config import tiny_config
from support.tui import demo_app, pilot_test, shown_text, wait_until

WIDE = (160, 45)  # every trial column fits
SPACE = {"training.learning_rate": [1e-3, 3e-2], "lora.r": [2, 4]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_bert, sentiment_csv):
    """A store holding one finished 3-trial sweep: (store root, the sweep's result)."""
    root = tmp_path_factory.mktemp("sweep-store")
    cfg = validate(tiny_config(tiny_bert, sentiment_csv, name="swept", device="cpu",
                               training={"epochs": 2, "batch_size": 32, "log_every": 4, "seed": 0}))
    result = S.run_sweep(cfg, S.parse_space(SPACE, cfg), SPACE, 3, pruner="none", seed=0, store_root=root)
    assert [t.state for t in result.trials] == ["COMPLETE"] * 3
    return root, result


async def _sweeps_shown(pilot):
    """From the Train tab, press s and wait for the sweep to be read: the Sweeps view."""
    app = pilot.app
    await wait_until(pilot, lambda: app.focused is not None and app.focused.id == "config-list",
                     what="the Train tab")
    await pilot.press("s")
    view = app.train.sweeps
    await wait_until(pilot, lambda: view.result is not None and app.focused.id == "sweeps-table",
                     what="the sweep's trials")
    return view


def _cells(table) -> list[dict[str, str]]:
    labels = [str(c.label) for c in table.columns.values()]
    return [dict(zip(labels, map(str, table.get_row_at(i)))) for i in range(table.row_count)]


@pytest.mark.timeout(600)
@pilot_test
async def test_sweeps_list_trials_and_plot_match_the_study(swept):
    root, result = swept
    expected = S.load_sweep(result.id, store_root=root)
    app = demo_app(root, initial_tab="train")
    async with app.run_test(size=WIDE) as pilot:
        view = await _sweeps_shown(pilot)
        assert view.sweeps == [(result.id, 3)] and view.selected == result.id
        sweeps_table = view.query_one("#sweeps-table")
        assert [c["sweep"] for c in _cells(sweeps_table)] == [result.id]

        rows = _cells(view.query_one("#trials-table"))
        assert len(rows) == len(expected.trials) == 3
        for cells, trial in zip(rows, expected.trials):
            assert cells["trial"].rstrip(" ★") == str(trial.number)
            assert cells["state"] == STATES[trial.state] == "finished"
            assert float(cells["dev f1_macro"]) == pytest.approx(trial.value, abs=5e-4)
            assert cells["version"] == trial.ref
            assert f"lora.r={trial.params['lora.r']}" in cells["parameters"]
        assert rows[expected.best.number]["trial"].endswith("★")
        title = shown_text(view.query_one("#sweep-title"), width=160)
        assert f"best: trial {expected.best.number}" in title and expected.best.ref in title

        # The plot's data: every finished trial's objective, and the running maximum (f1 is maximized).
        values = [t.value for t in expected.trials]
        running, best = [], None
        for value in values:
            best = value if best is None else max(best, value)
            running.append(best)
        series = view.plot_series()
        assert series.trials == [0, 1, 2] and series.values == values and series.best == running
        plot = view.query_one("#sweep-plot")
        assert any("\u2800" < ch <= "\u28ff" for ch in plot.render().plain)  # a line is drawn

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-table")
        keys = [(str(table.get_row_at(i)[1]), str(table.get_row_at(i)[2])) for i in range(table.row_count)]
        for key, does in (("s", "Sweeps"), ("n", "New sweep"), ("o", "Open best"), ("c", "Cancel sweep")):
            assert (key, does) in keys, (key, does)


@pytest.mark.timeout(600)
@pilot_test
async def test_open_best_lands_on_the_best_version_in_the_store(swept):
    root, result = swept
    with Store(root) as store:
        best = store.resolve("swept@best").ref
    assert best == result.best.ref
    app = demo_app(root, initial_tab="train")
    async with app.run_test(size=WIDE) as pilot:
        await _sweeps_shown(pilot)
        await pilot.press("o")
        await wait_until(pilot, lambda: str(app.query_one("#tabs").active) == "store" and app.store.selected
                         is not None and app.store.selected.ref == best, what="the best version in the Store")
        assert "best" in app.store.selected.aliases
        await wait_until(pilot, lambda: app.focused is not None and app.focused.id == "adapters-table",
                         what="the Store's focus")


def _write_config(directory, tiny_bert, sentiment_csv):
    cfg = tiny_config(tiny_bert, sentiment_csv, name="tui-swept", device="cpu",
                      training={"epochs": 1, "max_steps": 3, "batch_size": 8, "eval_batch_size": 48, "log_every": 1,
                                "seed": 0})
    cfg["data"] = {**cfg["data"], "max_length": 32}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tui-swept.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.timeout(600)
@pilot_test
async def test_start_dialog_refuses_a_bad_space_file_and_launches_adapters_sweep(tmp_path, tiny_bert,
                                                                                  sentiment_csv):
    root = tmp_path / "store"
    config = _write_config(tmp_path / "configs", tiny_bert, sentiment_csv)
    app = demo_app(root, configs_dir=tmp_path / "configs", initial_tab="train", poll_interval=0.2)
    async with app.run_test(size=WIDE) as pilot:
        app_focus = lambda: app.focused is not None and app.focused.id  # noqa: E731
        await wait_until(pilot, lambda: app_focus() == "config-list" and app.train.configs, what="the Train tab")
        await pilot.press("s")
        view = app.train.sweeps
        await wait_until(pilot, lambda: "No sweeps yet" in shown_text(view.query_one("#sweep-title")),
                         what="the empty sweeps view")
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, StartSweepModal), what="the start dialog")
        dialog = app.screen
        assert dialog.query_one("#sweep-config").value == str(config)  # the Train tab's one config

        def problem() -> str:
            return shown_text(dialog.query_one("#sweep-problem"))

        await pilot.press("enter")  # no space file
        assert "give a space file" in problem() and "lora.r: [4, 8, 16]" in problem()
        dialog.set_entries(space=str(tmp_path / "nowhere.yaml"))
        await pilot.press("enter")
        assert "there is no space file" in problem() and "nowhere.yaml" in problem()
        empty = tmp_path / "empty.yaml"
        empty.write_text("# nothing yet\n")
        dialog.set_entries(space=str(empty))
        await pilot.press("enter")
        assert f"the space file {empty} is empty" in problem()
        assert isinstance(app.screen, StartSweepModal) and not view.processes  # nothing launched

        space = tmp_path / "space.yaml"
        space.write_text(yaml.safe_dump({"lora.r": [2, 4]}))
        dialog.set_entries(space=str(space), trials="1")
        dialog.query_one("#sweep-pruner").value = "none"
        await pilot.press("enter")
        await wait_until(pilot, lambda: view.processes, what="the sweep to start")
        assert not isinstance(app.screen, StartSweepModal)
        assert view.processes[0].command == [
            sys.executable, "-m", "adapters", "sweep", str(config), "--space", str(space), "--trials", "1",
            "--pruner", "none", "--workers", "1", "--store", str(root), "--quiet", "--json"]

        # The new sweep shows up (read by the view's polling) and its trial lands as a version.
        await wait_until(pilot, lambda: view.result is not None and any(t.ref for t in view.result.trials),
                         timeout=300, what="the launched sweep's finished trial")
        await wait_until(pilot, lambda: not view.processes[0].running, timeout=60, what="the sweep to end")
        (sid, trials), = view.sweeps
        assert view.selected == sid == view.processes[0].sweep_id and sid.startswith("tui-swept-")
        assert trials == 1 and STATES[view.result.trials[0].state] == "finished"
        with Store(root) as store:
            assert store.resolve("tui-swept@best").ref == view.result.trials[0].ref == "tui-swept@1"
