"""The layout at 100×30 (the smallest size a user is expected to keep) under Pilot: tables leave out
their least important columns instead of cutting them off, per-class metrics stay one row per
class, probability bars fit their panes, and a plot of a single evaluation has a y-axis around it."""

from __future__ import annotations

import re

from rich.console import Console
from textual.widgets import DataTable, ProgressBar
from textual.widgets._progress_bar import Bar

from adapters_tui.compare import ComparePane
from adapters_tui.store_details import FittedGrid

from support.tui import demo_app, pilot_test, shown_text, wait_until

SMALL = (100, 30)
LARGE = (160, 45)


async def _started(pilot) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: app.focused is not None and all(
        app.query(selector) for selector in ("#details-tabs", "#run-view #metric-plot", "#compare-panes")),
        what="the app")
    await pilot.pause()


def _labels(table: DataTable) -> list[str]:
    return [column.label.plain for column in table.columns.values()]


def _fits(table: DataTable) -> bool:
    used = sum(column.get_render_width(table) for column in table.columns.values())
    return used <= table.scrollable_content_region.width


def _plain(static) -> str:
    """A Static's text as drawn at its own width."""
    return shown_text(static, width=static.content_region.width)


@pilot_test
async def test_store_tables_keep_the_columns_that_fit():
    app = demo_app()
    async with app.run_test(size=SMALL) as pilot:
        await _started(pilot)
        store = app.store
        await wait_until(pilot, lambda: len(store.rows) == 4, what="the store")
        await pilot.pause()
        adapters, versions = app.query_one("#adapters-table"), app.query_one("#versions-table")
        assert _fits(adapters) and _fits(versions)
        assert {"name", "headline metric"} <= set(_labels(adapters)) and len(_labels(adapters)) < 8
        assert {"version", "metric"} <= set(_labels(versions))

        narrow = _labels(adapters)
        await pilot.resize_terminal(*LARGE)  # wider: more columns come back
        await wait_until(pilot, lambda: len(_labels(adapters)) > len(narrow), what="more columns at 160 columns")
        assert _fits(adapters) and set(narrow) < set(_labels(adapters))
        assert len(_labels(versions)) == 6 and _fits(versions)


@pilot_test
async def test_per_class_metrics_stay_one_row_per_class():
    app = demo_app()
    async with app.run_test(size=SMALL) as pilot:
        await _started(pilot)
        store = app.store
        store.select_ref("rt-minilm-lora@2")
        await wait_until(pilot, lambda: store.selected and store.selected.ref == "rt-minilm-lora@2")
        await pilot.press("s")
        await pilot.pause()
        text = _plain(app.query_one("#details-metrics-body"))
        assert re.search(r"^\s*fresh\s+0\.812\s+0\.832\s+0\.782\s+250\s*$", text, re.M), text
        assert re.search(r"^\s*rotten\s+0\.812\s+0\.792\s+0\.842\s+250\s*$", text, re.M), text
        assert re.search(r"^\s*f1_macro\s+0\.812\s+0\.812\s*$", text, re.M), text  # dev and test side by side

        await pilot.press("f")  # file names stay whole; the digests make room
        await pilot.pause()
        text = _plain(app.query_one("#details-files-body"))
        assert re.search(r"^\s*adapter_model\.safetensors\s+8\.2 KB\s*$", text, re.M), text
        assert "sha256: not shown" in text


def test_a_grid_too_narrow_leaves_out_columns_and_says_which():
    grid = FittedGrid("per class", ["class", "F1", "P", "R", "n"], [("rotten", "0.812", "0.792", "0.842", "250")],
                      priority=[0, 1, 3, 4, 2])
    console = Console(width=20, record=True, color_system=None)
    console.print(grid)
    lines = console.export_text().splitlines()
    assert re.fullmatch(r"rotten\s+0\.812\s+250\s*", lines[2]), lines  # P and R go first, numbers stay whole
    assert "P, R" in " ".join(lines[3:]) and "not shown" in " ".join(lines[3:])


@pilot_test
async def test_probability_bars_fit_their_panes():
    app = demo_app(initial_tab="playground")
    async with app.run_test(size=SMALL) as pilot:
        await _started(pilot)
        play = app.playground
        await pilot.press("c")
        panes = play.query_one("#compare-panes")
        shown = [ComparePane(ref) for ref in ("a@1", "b@1", "c@1")]
        await panes.mount_all(shown)
        for pane, p in zip(shown, (0.91, 0.64, 0.2)):
            pane.post_message(ComparePane.Classified({"label": "fresh",
                                                      "probabilities": {"fresh": p, "rotten": 1 - p}}, 0.04))
        await wait_until(pilot, lambda: all(len(pane.query(ProgressBar)) == 2 for pane in shown), what="the bars")
        await pilot.pause()
        for pane in shown:
            status = _plain(pane.query_one(".pane-status"))
            assert re.search(r"latency 40 ms", status), status  # wrapped between parts, not inside one
            for bar in pane.query(Bar):
                assert bar.region.width >= 8, bar.region
                assert bar.region.right <= pane.content_region.right, (bar.region, pane.content_region)


def _y_ticks(plot) -> list[float]:
    return [float(m) for m in re.findall(r"^\s*(-?[\d.]+)┤", plot.render().plain, re.M)]


@pilot_test
async def test_one_evaluation_plots_around_its_value_and_the_stats_fit():
    app = demo_app(initial_tab="train")
    async with app.run_test(size=SMALL) as pilot:
        await _started(pilot)
        train = app.train
        await wait_until(pilot, lambda: len(train.runs) == 2, what="the demo runs")
        await pilot.press("r")
        run_id = "20250601-115800-rt-minilm-prefix-d4e5f6"  # one dev evaluation so far, f1_macro 0.5875
        train.query_one("#runs-table").move_cursor(row=0)
        await wait_until(pilot, lambda: train.shown_run == run_id, what="the running run")
        await pilot.pause()
        assert [m["f1_macro"] for _, m in train.runs[run_id].dev_history()] == [0.5875]
        ticks = _y_ticks(train.query_one("#metric-plot"))
        assert ticks and min(ticks) >= 0.5 and max(ticks) <= 0.7 and min(ticks) < 0.5875 < max(ticks), ticks

        stats = _plain(train.query_one("#run-stats")).strip()
        parts = stats.split(" · ")
        assert parts[0] == "step 28/64" and "ETA 1 min 12 s" in parts and "elapsed 1 min 02 s" in parts, stats
        assert "…" not in stats
