"""Screenshots of every screen and dialog, compared with the accepted SVGs in __snapshots__/.

The store, run logs and configs have fixed contents and times, the clock is pinned and cursors do
not blink, so a screenshot changes only when the UI does. After an intended change, look at the
report pytest writes, then accept with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import sys

import pytest

from adapters_store.errors import HintedError
from adapters_tui.compare import ComparePane
from adapters_tui.runs import TrainingProcess

from support.tui import EMPTY_CONFIGS, SNAPSHOT_CONFIGS, demo_app, empty_snapshot_root, snapshot_root, wait_until

NARROW = (80, 24)
WIDE = (200, 50)


async def started(pilot) -> None:
    """Screenshots run ``run_before`` as soon as the app runs: wait for the first tab's focus and
    for the other tabs, which mount just after the first frame (every pane's last widget)."""
    app = pilot.app
    await wait_until(pilot, lambda: app.focused is not None and all(
        app.query(selector) for selector in ("#store-details", "#run-view #metric-plot", "#compare-panes")),
        what="the app to start")


async def store_ready(pilot, ref: str | None = None) -> None:
    app = pilot.app
    await started(pilot)
    await wait_until(pilot, lambda: len(app.store.rows) == 4 and app.store.selected is not None
                     and app.focused is not None and app.focused.id == "adapters-table", what="the store to load")
    if ref:
        app.store.select_ref(ref)
        await wait_until(pilot, lambda: app.store.selected and app.store.selected.ref == ref, what=ref)
    await pilot.pause()


async def runs_ready(pilot) -> None:
    await started(pilot)
    train = pilot.app.train
    await wait_until(pilot, lambda: len(train.runs) == 2, what="the demo runs")
    train.action_show("train-runs")
    await pilot.pause()


# The smallest size a user is expected to keep, and a roomy one: every main tab at both.
SIZES = [pytest.param((100, 30), id="100x30"), pytest.param((160, 45), id="160x45")]


@pytest.mark.parametrize("size", SIZES)
def test_store_at(snap_compare, size):
    async def run_before(pilot):
        await store_ready(pilot, "rt-minilm-lora@2")
        await pilot.press("s")  # the Metrics tab: per-class rows are the widest part

    assert snap_compare(demo_app(), terminal_size=size, run_before=run_before)


def form_of(config: str):
    """A run_before that opens ``config`` (in the snapshot configs) in the Train form."""
    async def run_before(pilot):
        await started(pilot)
        train = pilot.app.train
        form = train.query_one("#config-form")
        await wait_until(pilot, lambda: train.configs, what="the configs")
        train.pick_config(SNAPSHOT_CONFIGS / config)
        await wait_until(pilot, lambda: form.resolved is not None, what="the form")
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_train_form_at(snap_compare, size):
    assert snap_compare(demo_app(initial_tab="train"), terminal_size=size, run_before=form_of("sentiment-lora.yaml"))


@pytest.mark.parametrize("size", SIZES)
def test_train_runs_at(snap_compare, size):
    async def run_before(pilot):
        await runs_ready(pilot)
        # The running run: one evaluation so far, plotted around its value.
        pilot.app.train.query_one("#runs-table").move_cursor(row=0)
        await pilot.pause()

    assert snap_compare(demo_app(initial_tab="train"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_playground_runtime_at(snap_compare, size):
    assert snap_compare(demo_app(initial_tab="playground"), terminal_size=size, run_before=started)


@pytest.mark.parametrize("size", SIZES)
def test_playground_side_by_side_at(snap_compare, size):
    assert snap_compare(demo_app(initial_tab="playground"), terminal_size=size, run_before=side_by_side)


def test_first_steps_in_an_empty_store(snap_compare):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.query_one("#store-empty").display, what="the first steps")
        await pilot.pause()

    assert snap_compare(demo_app(empty_snapshot_root(), configs_dir=EMPTY_CONFIGS), terminal_size=(100, 30),
                        run_before=run_before)


def test_first_steps_on_the_train_tab(snap_compare):
    async def run_before(pilot):
        form = pilot.app.train.query_one("#config-form")
        await wait_until(pilot, lambda: "first adapter" in str(form.query_one("#form-source").content),
                         what="the first steps")
        await pilot.pause()

    assert snap_compare(demo_app(empty_snapshot_root(), configs_dir=EMPTY_CONFIGS, initial_tab="train"),
                        terminal_size=(100, 30), run_before=run_before)


def test_cancel_confirmation(snap_compare, tmp_path):
    """The question cancelling a running run asks."""

    async def run_before(pilot):
        await runs_ready(pilot)
        train = pilot.app.train
        train.query_one("#runs-table").move_cursor(row=0)
        await pilot.pause()
        # A real child process stands in for the demo run's trainer (the app interrupts it on exit).
        # It keeps its own run folder, so its interruption can never write into the demo store that
        # every other TUI test shares.
        process = TrainingProcess([sys.executable, "-c", "import time; time.sleep(120)"], tmp_path / "run")
        process.start()
        train.processes[train.shown_run] = process
        await pilot.press("c")

    assert snap_compare(demo_app(initial_tab="train"), terminal_size=(100, 30), run_before=run_before)


def test_store_narrow(snap_compare):
    assert snap_compare(demo_app(), terminal_size=NARROW, run_before=store_ready)


def test_store_wide(snap_compare):
    async def run_before(pilot):
        await store_ready(pilot, "rt-minilm-lora@2")

    assert snap_compare(demo_app(), terminal_size=WIDE, run_before=run_before)


def test_store_metrics_tab(snap_compare):
    async def run_before(pilot):
        await store_ready(pilot, "rt-minilm-lora@2")
        pilot.app.query_one("#details-tabs").active = "details-metrics"
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=(120, 30), run_before=run_before)


def test_store_merged_lineage(snap_compare):
    async def run_before(pilot):
        await store_ready(pilot, "rt-merged@1")

    assert snap_compare(demo_app(), terminal_size=(120, 40), run_before=run_before)


def test_train_form(snap_compare):
    assert snap_compare(demo_app(initial_tab="train"), terminal_size=NARROW, run_before=form_of("chat-prefix.yaml"))


def test_train_runs_narrow(snap_compare):
    assert snap_compare(demo_app(initial_tab="train"), terminal_size=NARROW, run_before=runs_ready)


def test_train_runs_wide(snap_compare):
    assert snap_compare(demo_app(initial_tab="train"), terminal_size=WIDE, run_before=runs_ready)


def test_playground_runtime(snap_compare):
    assert snap_compare(demo_app(initial_tab="playground"), terminal_size=NARROW, run_before=started)


async def side_by_side(pilot):
    """Panes fed fixed answers (what the workers post), so latencies are stable."""
    await started(pilot)
    play = pilot.app.playground
    play.query_one("#play-tabs").active = "play-compare"
    play.query_one("#compare-refs").value = "rt-minilm-lora@prod, rt-minilm-prefix@1, chat-smollm2-lora"
    play.query_one("#compare-input").value = "a gripping, beautifully acted film"
    box = play.query_one("#compare-panes")
    panes = [ComparePane(ref) for ref in ("rt-minilm-lora@prod", "rt-minilm-prefix@1", "chat-smollm2-lora")]
    await box.mount_all(panes)
    panes[0].post_message(ComparePane.Task("classification"))
    panes[0].post_message(ComparePane.Classified({"label": "fresh", "probabilities": {"fresh": 0.91,
                                                                                      "rotten": 0.09}}, 0.042))
    panes[1].post_message(ComparePane.Task("classification"))
    panes[1].post_message(ComparePane.Classified({"label": "fresh", "probabilities": {"fresh": 0.64,
                                                                                      "rotten": 0.36}}, 0.038))
    panes[2].post_message(ComparePane.Task("causal-lm"))
    for piece in ("I loved it", ": the acting", " is superb."):
        panes[2].post_message(ComparePane.Piece(piece))
    panes[2].post_message(ComparePane.Generated(0.61, 0.12, 3))
    await wait_until(pilot, lambda: panes[0].result and panes[1].result and "pieces" in
                     str(panes[2].query_one(".pane-status").content), what="the panes")
    play.query_one("#compare-input").focus()
    await pilot.pause()


def test_playground_side_by_side(snap_compare):
    assert snap_compare(demo_app(initial_tab="playground"), terminal_size=(120, 30), run_before=side_by_side)


def test_help_screen(snap_compare):
    async def run_before(pilot):
        await store_ready(pilot)
        await pilot.press("question_mark")

    assert snap_compare(demo_app(), terminal_size=(100, 40), run_before=run_before)


def test_error_modal(snap_compare):
    async def run_before(pilot):
        await store_ready(pilot)
        pilot.app.show_error(HintedError("no adapter named 'sentimnet' in the store /tmp/adapters-tui-snapshots/store",
                                         "see `adapters list`, or pass --store for another store"))
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=NARROW, run_before=run_before)


def test_remove_confirmation(snap_compare):
    async def run_before(pilot):
        await store_ready(pilot, "rt-minilm-lora@2")
        await pilot.press("delete")

    assert snap_compare(demo_app(), terminal_size=NARROW, run_before=run_before)


def test_tag_dialog(snap_compare):
    async def run_before(pilot):
        await store_ready(pilot, "rt-minilm-prefix@1")
        await pilot.press("t", *"canary")

    assert snap_compare(demo_app(), terminal_size=NARROW, run_before=run_before)


def test_diff_screen(snap_compare):
    async def run_before(pilot):
        await store_ready(pilot, "rt-minilm-lora@2")
        await pilot.press("d")
        table = pilot.app.screen.query_one("#diff-table")
        await wait_until(pilot, lambda: table.row_count > 0, what="the diff")

    assert snap_compare(demo_app(), terminal_size=(120, 30), run_before=run_before)


def test_merge_dialog(snap_compare):
    async def run_before(pilot):
        await store_ready(pilot, "rt-minilm-lora@2")
        await pilot.press("m")
        screen = pilot.app.screen
        screen.query_one("#merge-refs").select("rt-minilm-lora@1")
        screen.query_one("#merge-weights").value = "0.7, 0.3"
        screen.query_one("#merge-method").value = "ties"
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=(100, 32), run_before=run_before)


def test_snapshot_store_is_the_demo(tmp_path):
    """The fixed store really holds the demo contents (a stale one would hide UI changes)."""
    from adapters_store import Store

    with Store(snapshot_root()) as s:
        assert [v.ref for v in s.list()] == ["chat-smollm2-lora@1", "rt-merged@1", "rt-minilm-lora@1",
                                             "rt-minilm-lora@2", "rt-minilm-prefix@1"]
