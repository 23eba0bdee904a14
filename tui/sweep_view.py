"""The Sweeps view (a tab of the Train screen): the sweeps of the store's default study storage,
the selected one's trials with their parameters, state, objective and stored version, and a plot
of the objective by trial with the best so far. It reads the storage in a worker (optuna and
sqlalchemy load there, never at startup), again every few seconds while it is on screen or a
sweep started here runs; it starts sweeps (``adapters sweep`` as a child process) and opens a
sweep's best version in the Store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, DataTable, Static
from textual_plotext import PlotextPlot

from adapters_tui.formatting import number
from adapters_tui.modals import ConfirmModal
from adapters_tui.run_view import STATUS_STYLES, value_range
from adapters_tui.runs import Outcome
from adapters_tui.sweeps import (
    Series,
    SweepProcess,
    SweepRequest,
    SweepsSnapshot,
    objective_series,
    params_text,
    state_name,
    sweep_command,
)
from adapters_tui.widgets import FitTable, fill_table

if TYPE_CHECKING:
    from adapters.experiments.sweep import SweepResult

SWEEP_POLL_S = 2.0  # a study read opens an SQL engine: slower than a run log's tail, and trials take minutes
SWEEP_COLUMNS = ["sweep", "trials"]
TRIAL_COLUMNS = ["trial", "state", "objective", "version", "seconds", "parameters"]
TRIAL_PRIORITY = [0, 1, 2, 3, 5, 4]  # narrow: the time goes first, then the parameters


class SweepsView(Vertical):
    BINDINGS = [
        Binding("n", "new_sweep", "New sweep"),
        Binding("o", "open_best", "Open best"),
        Binding("c", "cancel_sweep", "Cancel sweep"),
        Binding("f5", "reload", "Reload sweeps", show=False),
    ]

    class Loaded(Message):
        def __init__(self, snapshot: SweepsSnapshot):
            super().__init__()
            self.snapshot = snapshot

    class SweepEnded(Message):
        def __init__(self, process: SweepProcess, outcome: Outcome):
            super().__init__()
            self.process, self.outcome = process, outcome

    class OpenInStore(Message):
        """Show ``ref`` in the Store tab (the App switches tabs); ``note`` is said as it does."""

        def __init__(self, ref: str, note: str):
            super().__init__()
            self.ref, self.note = ref, note

    def __init__(self, poll_interval: float = SWEEP_POLL_S, **kwargs):
        """``poll_interval`` 0: the storage is read only on demand (when shown, on F5)."""
        super().__init__(**kwargs)
        self.poll_interval = poll_interval
        self.sweeps: list[tuple[str, int]] = []
        self.selected: str | None = None  # the sweep whose trials are shown
        self.result: SweepResult | None = None
        self.series = Series()
        self.pruners: tuple[str, ...] = ()
        self.processes: list[SweepProcess] = []
        self._reading = False
        self._again = False  # asked to read while a read was under way

    def compose(self) -> ComposeResult:
        with Horizontal(id="sweeps-body"):
            yield FitTable(id="sweeps-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="sweep-detail"):
                with Horizontal(id="sweep-header"):
                    yield Static(Text("No sweep selected.", style="dim"), id="sweep-title")
                    yield Button("New sweep", id="new-sweep", compact=True)
                    yield Button("Open best", id="open-best", compact=True)
                yield FitTable(id="trials-table", cursor_type="row", zebra_stripes=True)
                yield PlotextPlot(id="sweep-plot")

    def on_mount(self) -> None:
        if not self.app.is_running:
            return
        self.query_one("#sweeps-table", DataTable).border_title = "sweeps"
        self.query_one("#trials-table", DataTable).border_title = "trials"
        fill_table(self.query_one("#sweeps-table", DataTable), SWEEP_COLUMNS, [])
        fill_table(self.query_one("#trials-table", DataTable), TRIAL_COLUMNS, [])
        self._plot(Series(), "objective")
        if self.poll_interval > 0:
            self.set_interval(self.poll_interval, self._tick)

    def on_show(self) -> None:
        self.reload()

    def focus_main(self) -> None:
        self.query_one("#sweeps-table", DataTable).focus()

    def shown(self) -> bool:
        """Whether the view is on screen (its tab and the Train tab are the active ones)."""
        return all(node.display for node in self.ancestors_with_self if isinstance(node, Widget))

    def _tick(self) -> None:
        if self.shown() or any(p.running for p in self.processes):
            self.reload()

    # ---- reading ----------------------------------------------------------------------------------
    def action_reload(self) -> None:
        self.reload()

    def reload(self) -> None:
        # One read at a time: a slow storage must not pile up reads behind the timer. A read asked
        # for meanwhile (another sweep selected) follows when this one is shown.
        if self._reading:
            self._again = True
            return
        self._reading = True
        self._read(self.selected)

    @work(thread=True, group="sweeps-read", exit_on_error=False)
    def _read(self, sweep_id: str | None) -> None:
        from adapters_tui.sweeps import read_sweeps

        try:
            snapshot = read_sweeps(self.app.store_root, sweep_id)
        except Exception as exc:  # noqa: BLE001 - shown in the view, not a modal on every poll
            snapshot = SweepsSnapshot(self.sweeps, error=str(getattr(exc, "message", None) or exc))
        self.post_message(self.Loaded(snapshot))

    def on_sweeps_view_loaded(self, message: Loaded) -> None:
        self._reading = False
        snap = message.snapshot
        self.pruners = snap.pruners or self.pruners
        ids = [sid for sid, _ in snap.sweeps]
        for process in self.processes:
            if process.sweep_id is None:
                # A sweep this TUI started: the first new sweep to appear is its, and is shown.
                new = [sid for sid in ids if sid not in process.known
                       and sid not in {p.sweep_id for p in self.processes}]
                if new:
                    process.sweep_id = new[0]
                    if self.selected != new[0]:
                        self.selected = new[0]
                        self._again = True
        self.sweeps = snap.sweeps
        if snap.shown is not None and (self.selected is None or snap.shown.id == self.selected):
            self.selected, self.result = snap.shown.id, snap.shown
        elif self.selected not in ids:
            self.selected, self.result = None, None
        self._show_sweeps(snap.error)
        if self._again:
            self._again = False
            self.reload()

    def _show_sweeps(self, error: str | None = None) -> None:
        table = self.query_one("#sweeps-table", DataTable)
        rows = [([Text(sid, style="bold"), str(n)], sid) for sid, n in self.sweeps]
        fill_table(table, SWEEP_COLUMNS, rows)
        ids = [sid for sid, _ in self.sweeps]
        if self.selected in ids:
            table.move_cursor(row=ids.index(self.selected))
        self._render_trials()
        self.query_one("#sweep-title", Static).update(self._title(error))

    def _title(self, error: str | None) -> Text:
        if error:
            return Text(error, style="red")
        result = self.result
        if result is None:
            running = any(p.running for p in self.processes)
            if running:
                return Text("Starting the sweep…", style="yellow")
            return Text.assemble(("No sweeps yet. ", "bold"), "Press n to start one from a config and a space "
                                 "file, or run ", ("adapters sweep CONFIG --space SPACE.yaml", "bold"), ".")
        title = Text.assemble((result.id, "bold"), f"  {result.direction} dev {result.metric}", ("  ", ""))
        if result.best is not None:
            title.append(f"best: trial {result.best.number}, {number(result.best.value)}", style="bold green")
            if result.best.ref:
                title.append(f" → {result.best.ref}", style="green")
        else:
            title.append("no finished trial yet", style="dim")
        counts: dict[str, int] = {}
        for row in result.trials:
            counts[state_name(row)] = counts.get(state_name(row), 0) + 1
        title.append("\n" + " · ".join(f"{n} {state}" for state, n in counts.items()), style="dim")
        if result.importances:
            title.append("  importances: " + ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items()),
                         style="dim")
        return title

    def _render_trials(self) -> None:
        table = self.query_one("#trials-table", DataTable)
        result = self.result
        rows = []
        best = result.best.number if result and result.best else None
        for row in result.trials if result else []:
            state = state_name(row)
            mark = Text(" ★", style="bold green") if row.number == best else Text("")
            rows.append(([Text(str(row.number)) + mark, Text(state, style=STATUS_STYLES.get(state, "")),
                          number(row.value), Text(row.ref or "", style="green" if row.number == best else ""),
                          "" if row.seconds is None else f"{row.seconds:.0f}", params_text(row.params)],
                         str(row.number)))
        columns = TRIAL_COLUMNS if result is None else [*TRIAL_COLUMNS[:2], f"dev {result.metric}", *TRIAL_COLUMNS[3:]]
        fill_table(table, columns, rows, max_width=80, priority=TRIAL_PRIORITY)
        self.series = objective_series(result.trials, result.direction) if result else Series()
        self._plot(self.series, f"dev {result.metric}" if result else "objective")

    def plot_series(self) -> Series:
        """What the plot draws now: the finished trials' objectives and the best so far."""
        return self.series

    def _plot(self, series: Series, label: str) -> None:
        plot = self.query_one("#sweep-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"{label} by trial, best so far")
        if series.trials:
            plt.scatter(series.trials, series.values, label="trial")
            plt.plot(series.trials, series.best, marker="braille", label="best so far")
            plt.xlabel("trial")
            if (y := value_range(series.values)) is not None:
                plt.ylim(*y)
            if len(set(series.trials)) == 1:
                plt.xlim(series.trials[0] - 1, series.trials[0] + 1)
        plot.refresh()

    @on(DataTable.RowHighlighted, "#sweeps-table")
    def _sweep_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # Refilling the table highlights its first row before the cursor goes back to the shown
        # sweep: only a highlight where the cursor still is was the user's.
        key = event.row_key.value if event.row_key is not None else None
        if key is not None and key != self.selected and event.cursor_row == event.data_table.cursor_row:
            self.selected = key
            self.reload()

    # ---- starting and cancelling ------------------------------------------------------------------
    @on(Button.Pressed, "#new-sweep")
    def _new_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_new_sweep()

    @on(Button.Pressed, "#open-best")
    def _best_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_open_best()

    def action_new_sweep(self) -> None:
        from adapters_tui.sweep_modal import StartSweepModal

        if not self.pruners:  # the storage has not been read yet (that loads the list)
            from adapters.experiments.sweep import PRUNERS

            self.pruners = tuple(PRUNERS)
        from adapters_tui.train_form import ConfigForm
        from adapters_tui.train_pane import TrainPane

        # The Train tab's configs (files and stored ones), the one in its form first.
        train = self.query_ancestor(TrainPane)
        source = train.query_one(ConfigForm).source
        self.app.push_screen(StartSweepModal(train.configs, self.pruners, Path(source) if source else None),
                             lambda request: request and self.start_sweep(request))

    def start_sweep(self, request: SweepRequest) -> SweepProcess:
        process = SweepProcess(sweep_command(request, self.app.store_root), {sid for sid, _ in self.sweeps})
        process.start()
        self.processes.append(process)
        self.app.notify(f"sweep of {request.config.name} started ({request.trials} trials, {request.pruner})")
        self._wait_for(process)
        self._show_sweeps()
        self.reload()
        return process

    @work(thread=True, group="sweeps-wait", exit_on_error=False)
    def _wait_for(self, process: SweepProcess) -> None:
        self.post_message(self.SweepEnded(process, process.wait()))

    def on_sweeps_view_sweep_ended(self, message: SweepEnded) -> None:
        process, outcome = message.process, message.outcome
        if outcome.returncode == 0:
            best = (outcome.result or {}).get("best") or {}
            said = f": best {number(best.get('value'))} → {best.get('ref')}" if best.get("ref") else ""
            self.app.notify(f"sweep {process.sweep_id or ''} finished{said}", title="sweep finished")
            if process.sweep_id:
                self.selected = process.sweep_id
        elif process.cancelled:
            self.app.notify(f"cancelled the sweep {process.sweep_id or ''}".rstrip())
        else:
            from adapters_store.errors import HintedError

            self.app.show_error(HintedError(f"the sweep failed: {outcome.error}", outcome.hint))
        self.reload()

    def action_cancel_sweep(self) -> None:
        running = [p for p in self.processes if p.running]
        mine = [p for p in running if p.sweep_id == self.selected] or (running if len(running) == 1 else [])
        if not mine:
            why = "none started here is running" if not running else "select the sweep to cancel"
            self.app.notify(f"Cannot cancel: {why}.", severity="warning")
            return
        process = mine[0]

        def answer(yes: bool | None) -> None:
            if yes and process.running:
                self._cancel(process)

        self.app.push_screen(ConfirmModal(f"Cancel the sweep {process.sweep_id or '(starting)'}?",
                                          "The running trial stops and is not stored; finished trials stay. "
                                          "Starting the same sweep again continues it.",
                                          confirm="Cancel sweep", danger=True, keep="Keep sweeping"), answer)

    @work(thread=True, group="sweeps-cancel", exit_on_error=False)
    def _cancel(self, process: SweepProcess) -> None:
        process.cancel()

    def cancel_all(self) -> None:
        for process in self.processes:
            process.cancel(grace_s=3.0)

    def on_unmount(self) -> None:
        # However the app ends, no sweep it started outlives it unseen.
        self.cancel_all()

    # ---- the best version -------------------------------------------------------------------------
    def action_open_best(self) -> None:
        result = self.result
        if result is None or result.best is None or not result.best.ref:
            self.app.notify("This sweep has no finished trial (yet).", severity="warning")
            return
        self._open_best(result.name, result.best.ref)

    @work(thread=True, group="sweeps-open", exit_on_error=False)
    def _open_best(self, name: str, ref: str) -> None:
        """This sweep's best version; NAME@best is it unless a later sweep of the same name moved it."""
        from adapters_store import Store
        from adapters_store.errors import RefNotFound

        alias = f"{name}@best"
        with Store(self.app.store_root) as store:
            version = store.resolve(ref)
            try:
                held = store.resolve(alias).ref
            except RefNotFound:
                held = None
        note = (f"{alias} → {version.ref}" if held == version.ref else
                f"{version.ref}, this sweep's best ({alias} is {held or 'not set'})")
        self.post_message(self.OpenInStore(version.ref, note))
