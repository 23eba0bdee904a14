"""Terminal UI start-up: from launching the interpreter to the first frame that SHOWS THE ROWS of
the store table, for ``adapters tui`` on a store of 200 versions of 40 adapters, against a minimal
Textual app (header, a DataTable, footer) that reads the same store and fills the same 40 rows
(one per adapter: name, versions, base, method, task) before its first frame: the floor Textual
itself sets.

Both apps show 40 rows. Ours fills its table from a worker thread (the store is read off the UI
thread), so its first frames show an empty table; the minimal app fills its rows in ``on_mount``.
The clock stops, for both, at the end of the first compositor refresh after which the table holds
all 40 rows *and* the rendered screen shows them: the screen's text (``render_strips``) names at
least ``MIN_VISIBLE`` distinct adapters. The first frame with the table widget at all (possibly
still empty) is reported too, for information.

Each start is a fresh subprocess running the app headless (Textual's ``run_test``). The child
reads ``CLOCK_MONOTONIC`` (system-wide, the same clock as the parent's) right after the frame and
prints it; the parent subtracts its own reading taken just before ``Popen``, so interpreter start
and imports count, and the screen-text check that follows the frame does not. Runs alternate
between the two apps (AB BA ...), after one warm-up start of each (which also writes the bytecode
caches that a user's installation has); medians with min-max, and the min-max of the per-pair
ratios. Goal (issue): under one second, with no torch import.

    python -m benchmarks tui [--quick]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common as C

GOAL_S = 1.0
VERSIONS = 200
ADAPTERS = 40  # the rows both tables show
MIN_VISIBLE = 10  # distinct adapter names the frame must show (both tables have room for more)
SIZE = (120, 40)
NAME = re.compile(r"adapter-\d\d")


def _now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _first_frame(app, table_id: str) -> None:
    """In the child: run ``app`` headless; print "first <t>" at the first frame whose screen holds
    the table, and "rows <t> <torch imported> <names shown> <rows>" at the first frame that shows
    its rows, then exit."""
    import asyncio

    from textual.screen import Screen
    from textual.widgets import DataTable

    original = Screen._compositor_refresh
    state = {"first": False}

    def refresh(screen, *args, **kwargs):
        out = original(screen, *args, **kwargs)
        t = _now()
        tables = screen.query(f"#{table_id}")
        if not tables or screen is not screen.app.screen:
            return out
        if not state["first"]:
            state["first"] = True
            print(f"first {t!r}", flush=True)
        table = tables.first(DataTable)
        if table.row_count == ADAPTERS:
            text = "\n".join(strip.text for strip in screen._compositor.render_strips())
            shown = len(set(NAME.findall(text)))
            if shown >= MIN_VISIBLE:
                print(f"rows {t!r} {int('torch' in sys.modules)} {shown} {table.row_count}", flush=True)
                os._exit(0)  # the first frame with rows is all that is measured
        return out

    Screen._compositor_refresh = refresh

    async def main():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(30)

    asyncio.run(main())


def ours() -> None:
    from adapters_tui.app import AdaptersApp

    _first_frame(AdaptersApp(), "adapters-table")


def minimal() -> None:
    from textual.app import App
    from textual.widgets import DataTable, Footer, Header

    from adapters_store import Store

    class Minimal(App):
        def compose(self):
            yield Header()
            yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
            yield Footer()

        def on_mount(self):
            table = self.query_one(DataTable)
            table.add_columns("name", "versions", "base", "method", "task")
            latest, counts = {}, {}
            with Store(os.environ["ADAPTERS_HOME"]) as store:
                for v in store.list():  # one row per adapter: its latest version, like the Store screen
                    counts[v.name] = counts.get(v.name, 0) + 1
                    if v.name not in latest or v.number > latest[v.name].number:
                        latest[v.name] = v
            for name in sorted(latest):
                v = latest[name]
                table.add_row(name, str(counts[name]), v.base or "", v.method or "", v.task or "")

    _first_frame(Minimal(), "table")


def _start(func: str, home: Path) -> dict:
    env = dict(C.bench_env(), ADAPTERS_HOME=str(home))
    # As on a user's machine, where Python keeps compiled bytecode: the warm-up start writes it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = _now()
    proc = subprocess.Popen([sys.executable, "-c", f"from benchmarks.bench_tui import {func}; {func}()"],
                            cwd=C.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = None
    line = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or line.startswith("rows"):
            break
        if line.startswith("first"):
            first = float(line.split()[1]) - start
    proc.wait(60)
    if not line.startswith("rows"):
        raise RuntimeError(f"{func} drew no frame with its rows (exit {proc.returncode})")
    _, t, torch_imported, shown, rows = line.split()
    return {"rows_s": float(t) - start, "first_s": first, "torch": torch_imported == "1", "shown": int(shown),
            "rows": int(rows)}


def run(quick: bool = False) -> dict:
    from adapters_store import Store
    from adapters_store.testing import make_adapter_dir

    runs = 3 if quick else 9
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        home = Path(tmp) / "home"
        with Store(home, durable=False) as store:
            for i in range(VERSIONS):
                src = make_adapter_dir(Path(tmp) / f"src{i % 20}", payload=f"a{i % 20}".encode())
                store.put(src, f"adapter-{i % ADAPTERS:02d}", metrics={"accuracy": (i % 89) / 89},
                          lineage={"base": {"id": "minilm-l6"}})
        _start("minimal", home)  # warm the file cache and bytecode for both
        _start("ours", home)
        results: dict[str, list[dict]] = {"ours": [], "minimal": []}
        for i in range(runs):
            for func in (("ours", "minimal") if i % 2 == 0 else ("minimal", "ours")):
                results[func].append(_start(func, home))
    load_end = os.getloadavg()
    rows_s = {k: [r["rows_s"] for r in v] for k, v in results.items()}
    first_s = {k: [r["first_s"] for r in v] for k, v in results.items()}
    paired = [a / b for a, b in zip(rows_s["ours"], rows_s["minimal"])]
    med = {k: C.median(v) for k, v in rows_s.items()}
    med_first = {k: C.median(v) for k, v in first_s.items()}
    torch_seen = any(r["torch"] for r in results["ours"])
    ok = med["ours"] < GOAL_S and not torch_seen

    def spread(v):
        return f"{min(v):.2f}-{max(v):.2f} s"

    C.print_table(
        f"TUI start-up: interpreter launch to the first frame that shows the store table's {ADAPTERS} rows "
        f"({VERSIONS} versions, {SIZE[0]}x{SIZE[1]}), medians of {runs} alternated starts",
        ["app", "rows shown", "min-max", "vs minimal", "paired", "first frame (info)", "goal", "status"],
        [["adapters tui", f"{med['ours']:.2f} s", spread(rows_s["ours"]), f"{med['ours'] / med['minimal']:.2f}x",
          f"{min(paired):.2f}-{max(paired):.2f}", f"{med_first['ours']:.2f} s", f"< {GOAL_S:g} s, no torch",
          C.goal(ok)],
         ["minimal Textual app (header, table, footer)", f"{med['minimal']:.2f} s", spread(rows_s["minimal"]),
          "1.00x", "", f"{med_first['minimal']:.2f} s", "", ""]],
        caption=f"Both tables hold {ADAPTERS} rows at the measured frame, which shows at least {MIN_VISIBLE} of them "
                f"(ours showed {min(r['shown'] for r in results['ours'])}-{max(r['shown'] for r in results['ours'])}, "
                f"minimal {min(r['shown'] for r in results['minimal'])}-"
                f"{max(r['shown'] for r in results['minimal'])}). "
                f"'first frame' = the first frame with the table widget, rows or not. torch imported before the frame: "
                f"{'yes' if torch_seen else 'no'}; load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end")
    result = {"quick": quick, "runs": runs, "versions": VERSIONS, "rows": ADAPTERS, "min_visible": MIN_VISIBLE,
              "measure": "launch to the first frame showing the table's rows",
              "ours_s": rows_s["ours"], "minimal_s": rows_s["minimal"], "paired_ratios": paired,
              "first_frame_ours_s": first_s["ours"], "first_frame_minimal_s": first_s["minimal"],
              "median_ours_s": round(med["ours"], 3), "median_minimal_s": round(med["minimal"], 3),
              "median_first_frame_ours_s": round(med_first["ours"], 3),
              "median_first_frame_minimal_s": round(med_first["minimal"], 3),
              "starts": results, "torch_imported": torch_seen, "load_avg_start": load_start, "load_avg_end": load_end,
              "goals": {f"first frame with rows < {GOAL_S:g} s, no torch": {"value": f"{med['ours']:.2f} s",
                                                                             "met": ok}}}
    C.write_json("tui", result)
    return result
