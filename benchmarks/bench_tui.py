"""Terminal UI start-up: from launching the interpreter to the first frame that shows the store
table, for ``adapters tui`` on a store of 200 versions, against a minimal Textual app (header,
a DataTable of the same 200 rows, footer) started the same way: the floor Textual itself sets.

Each start is a fresh subprocess running the app headless (Textual's ``run_test``); the parent
times from ``Popen`` to the child's "frame" line, so interpreter start and imports count. Runs
alternate between the two apps, after one warm-up start of each (which also writes the bytecode
caches that a user's installation has); medians. Goal (issue): under one second, with no torch import.

    python -m benchmarks tui [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common as C

GOAL_S = 1.0
VERSIONS = 200
SIZE = (120, 40)


def _first_frame(app, has_table) -> None:
    """In the child: run ``app`` headless, print "frame <torch imported>" at the first frame
    whose screen holds the table, then exit."""
    import asyncio

    from textual.screen import Screen

    original = Screen._compositor_refresh

    def refresh(screen, *args, **kwargs):
        out = original(screen, *args, **kwargs)
        if has_table(screen):
            print(f"frame {int('torch' in sys.modules)}", flush=True)
            os._exit(0)  # the first frame is all that is measured
        return out

    Screen._compositor_refresh = refresh

    async def main():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(30)

    asyncio.run(main())


def ours() -> None:
    from tui.app import AdaptersApp

    _first_frame(AdaptersApp(), lambda screen: bool(screen.query("#adapters-table")))


def minimal() -> None:
    from textual.app import App
    from textual.widgets import DataTable, Footer, Header

    from store import Store

    class Minimal(App):
        def compose(self):
            yield Header()
            yield DataTable(id="table")
            yield Footer()

        def on_mount(self):
            table = self.query_one(DataTable)
            table.add_columns("name", "version", "base", "method", "task")
            with Store(os.environ["ADAPTERS_HOME"]) as store:
                for v in store.list():
                    table.add_row(v.name, str(v.number), v.base or "", v.method or "", v.task or "")

    _first_frame(Minimal(), lambda screen: bool(screen.query("#table")))


def _start(func: str, home: Path) -> tuple[float, bool]:
    env = dict(C.bench_env(), ADAPTERS_HOME=str(home))
    # As on a user's machine, where Python keeps compiled bytecode: the warm-up start writes it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", f"from benchmarks.bench_tui import {func}; {func}()"],
                            cwd=C.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.wait(60)
    if not line.startswith("frame"):
        raise RuntimeError(f"{func} drew no frame (exit {proc.returncode})")
    return elapsed, line.split()[1] == "1"


def run(quick: bool = False) -> dict:
    from store import Store
    from store.testing import make_adapter_dir

    runs = 3 if quick else 9
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        home = Path(tmp) / "home"
        with Store(home, durable=False) as store:
            for i in range(VERSIONS):
                src = make_adapter_dir(Path(tmp) / f"src{i % 20}", payload=f"a{i % 20}".encode())
                store.put(src, f"adapter-{i % 40:02d}", metrics={"accuracy": (i % 89) / 89},
                          lineage={"base": {"id": "minilm-l6"}})
        _start("minimal", home)  # warm the file cache and bytecode for both
        _start("ours", home)
        times: dict[str, list[float]] = {"ours": [], "minimal": []}
        torch_seen = False
        for _ in range(runs):
            for func in ("ours", "minimal"):
                elapsed, torch_imported = _start(func, home)
                times[func].append(elapsed)
                torch_seen |= torch_imported and func == "ours"
    ours_s, floor_s = C.median(times["ours"]), C.median(times["minimal"])
    C.print_table(
        f"TUI start-up: interpreter launch to the first frame with the store table ({VERSIONS} versions, "
        f"{SIZE[0]}x{SIZE[1]}), medians of {runs}",
        ["app", "first frame", "vs minimal Textual app", "goal", "status"],
        [["adapters tui", f"{ours_s:.2f} s", f"{ours_s / floor_s:.2f}x", f"< {GOAL_S:g} s, no torch",
          C.goal(ours_s < GOAL_S and not torch_seen)],
         ["minimal Textual app (header, table, footer)", f"{floor_s:.2f} s", "1.00x", "", ""]],
        caption=f"torch imported before the first frame: {'yes' if torch_seen else 'no'}; "
                f"load average {os.getloadavg()[0]:.2f}")
    result = {"quick": quick, "runs": runs, "versions": VERSIONS, "ours_s": times["ours"],
              "minimal_s": times["minimal"], "median_ours_s": round(ours_s, 3), "median_minimal_s": round(floor_s, 3),
              "torch_imported": torch_seen,
              "goals": {f"first frame < {GOAL_S:g} s, no torch": {"value": f"{ours_s:.2f} s",
                                                                   "met": ours_s < GOAL_S and not torch_seen}}}
    C.write_json("tui", result)
    return result
