"""The Train screen: pick a config (or retrain a stored version), edit it, launch ``adapters
train`` as a subprocess, and watch every run under the store's runs directory (those started from
the CLI too) through their JSONL event logs; its Sweeps tab shows and starts hyper-parameter
sweeps (adapters_tui.sweep_view), whose trials are runs like any other."""

from __future__ import annotations

import copy
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, OptionList, TabbedContent, TabPane
from textual.widgets.option_list import Option

from adapters.evaluation.metrics import headline_text
from adapters_store import Version
from adapters_tui import train_config
from adapters_tui.catalog import TRAINING_CONFIG_FILE, read_versions, refs_by_run
from adapters_tui.formatting import age
from adapters_tui.modals import ConfirmModal
from adapters_tui.run_view import STATUS_STYLES, RunView
from adapters_tui.runs import FINAL, Outcome, RunState, RunWatcher, TrainingProcess, new_run_dir, train_command
from adapters_tui.sweep_view import SWEEP_POLL_S, SweepsView
from adapters_tui.train_form import ConfigForm
from adapters_tui.widgets import FitTable, ReportsWorkerErrors, fill_table

RUN_COLUMNS = ["name", "status", "progress", "metric", "started", "run"]
RUN_PRIORITY = [0, 1, 2, 3, 4, 5]  # narrow: the run id goes first (the run's view shows it)


class TrainPane(ReportsWorkerErrors, Vertical):
    BINDINGS = [
        Binding("f", "show('train-launch')", "Form"),
        Binding("r", "show('train-runs')", "Runs"),
        Binding("s", "show('train-sweeps')", "Sweeps"),
        Binding("ctrl+l", "launch", "Launch"),
        Binding("c", "cancel", "Cancel run"),
        Binding("o", "open_version", "Open in store"),
        Binding("f5", "reload_configs", "Reload configs", show=False),
    ]

    class ConfigResolved(Message):
        def __init__(self, source: Path, resolved: dict, retrain_ref: str | None):
            super().__init__()
            self.source, self.resolved, self.retrain_ref = source, resolved, retrain_ref

    class RunsChanged(Message):
        def __init__(self, runs: list[RunState]):
            super().__init__()
            self.runs = runs

    class TrainingEnded(Message):
        def __init__(self, run_id: str, outcome: Outcome):
            super().__init__()
            self.run_id, self.outcome = run_id, outcome

    class VersionReady(Message):
        """A run produced a stored version: the App reloads the Store, and shows the version there
        when ``jump`` (the user asked to open it)."""

        def __init__(self, ref: str, jump: bool):
            super().__init__()
            self.ref, self.jump = ref, jump

    def __init__(self, poll_interval: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.poll_interval = poll_interval
        self.configs: list[train_config.ConfigEntry] = []
        self.runs: dict[str, RunState] = {}
        self.processes: dict[str, TrainingProcess] = {}
        self.watcher: RunWatcher | None = None
        self.shown_run: str | None = None

    def compose(self) -> ComposeResult:
        with TabbedContent(id="train-tabs"):
            with TabPane("Form", id="train-launch"):
                with Horizontal(id="launch-body"):
                    yield OptionList(id="config-list")
                    yield ConfigForm(id="config-form")
            with TabPane("Runs", id="train-runs"):
                yield FitTable(id="runs-table", cursor_type="row", zebra_stripes=True)
                yield RunView(id="run-view")
            with TabPane("Sweeps", id="train-sweeps"):
                yield SweepsView(poll_interval=SWEEP_POLL_S if self.poll_interval > 0 else 0, id="sweeps-view")

    def on_mount(self) -> None:
        if not self.app.is_running:  # mounted (deferred) while the app shuts down: no children
            return
        self.query_one("#config-list", OptionList).border_title = "configs"
        fill_table(self.query_one("#runs-table", DataTable), RUN_COLUMNS, [])
        root = self.app.store_root
        self.watcher = RunWatcher(self.app.runs_dir, lambda run_ids: refs_by_run(root, run_ids))
        self.action_reload_configs()
        self.poll_runs()
        if self.poll_interval > 0:
            self.set_interval(self.poll_interval, self.poll_runs)

    def on_fit_table_resized(self, message: FitTable.Resized) -> None:
        # The runs table chooses its columns by the width it has.
        if self.runs:
            self._render_runs()

    def action_show(self, tab: str) -> None:
        self.query_one("#train-tabs", TabbedContent).active = tab
        self.focus_main()

    def focus_main(self) -> None:
        """The config list on the Form tab, the runs table on the Runs tab, the sweeps on Sweeps."""
        active = self.query_one("#train-tabs", TabbedContent).active
        if active == "train-sweeps":
            self.sweeps.focus_main()
            return
        self.query_one("#config-list" if active == "train-launch" else "#runs-table").focus()

    @property
    def sweeps(self) -> SweepsView:
        return self.query_one(SweepsView)

    def running(self) -> list:
        """The trainings and sweeps started here that are still going."""
        return [p for p in [*self.processes.values(), *self.sweeps.processes] if p.running]

    # ---- configs ----------------------------------------------------------------------------------
    def action_reload_configs(self) -> None:
        self.list_configs()

    @work(thread=True, exclusive=True, group="configs", exit_on_error=False)
    def list_configs(self) -> None:
        """The configs directory's files, then the configs of stored versions (so Train works
        wherever the TUI was started)."""
        files = train_config.list_configs(self.app.configs_dir)
        stored = train_config.stored_configs(read_versions(self.app.store_root))
        self.app.call_from_thread(self._show_configs, files, stored)

    def _show_configs(self, files: list[train_config.ConfigEntry], stored: list[train_config.ConfigEntry]) -> None:
        self.configs = files + stored
        options = self.query_one("#config-list", OptionList)
        options.clear_options()
        options.add_options([Option(Text(e.label), id=e.key) for e in files])
        if stored:
            options.add_option(Option(Text("from the store", style="bold dim"), disabled=True))
            options.add_options([Option(Text(e.label), id=e.key) for e in stored])
        if self.configs:
            options.highlighted = 0 if files else 1
        else:
            options.add_option(Option(Text("no configs", style="dim"), disabled=True))
        if not self.query_one(ConfigForm).resolved:
            self.query_one(ConfigForm).show_guidance(self._guidance(files, stored), fields=bool(self.configs))

    def _guidance(self, files: list, stored: list) -> Text:
        if files or stored:
            return Text("Pick a config on the left, or press n on a version in the Store.", style="dim")
        where = (f"{self.app.configs_dir} holds none" if self.app.configs_dir
                 else "there is no ./configs directory here")
        return Text.assemble(
            ("No training configs yet: ", "bold"), f"{where}, and the store has no trained versions.\n\n"
            "To get a first adapter, train one from an example config of the adapter-manager repository:\n\n",
            ("    adapters train configs/rt-minilm-lora.yaml", "bold"),
            "\n\nor start the TUI there (it lists ./configs), or give it your own YAML configs with ",
            ("adapters tui --configs DIR", "bold"), ". Trained versions are listed here afterwards, wherever the "
            "TUI is started.")

    @on(OptionList.OptionSelected, "#config-list")
    def _config_chosen(self, event: OptionList.OptionSelected) -> None:
        entry = next((e for e in self.configs if e.key == event.option.id), None)
        if entry is not None:
            self.pick_config(entry.path, entry.ref)

    def pick_config(self, path: Path, retrain_ref: str | None = None) -> None:
        """Load a config file into the form (what choosing it in the list does); edits made in
        the form are dropped only after the user agrees."""
        form = self.query_one(ConfigForm)
        if not form.edited():
            self.resolve_config(Path(path), retrain_ref)
            return
        self.app.push_screen(
            ConfirmModal(f"Discard the edits to {form.origin}?",
                         f"The form is filled again from {retrain_ref or Path(path).name}.",
                         confirm="Discard edits", danger=True, keep="Keep editing"),
            lambda yes: yes and self.resolve_config(Path(path), retrain_ref))

    @work(thread=True, exclusive=True, group="resolve", exit_on_error=False)
    def resolve_config(self, path: Path, retrain_ref: str | None = None) -> None:
        resolved = train_config.resolve(path)
        self.post_message(self.ConfigResolved(path, resolved, retrain_ref))

    def on_train_pane_config_resolved(self, message: ConfigResolved) -> None:
        self.query_one(ConfigForm).load(message.source, message.resolved, message.retrain_ref)
        self.query_one("#train-tabs", TabbedContent).active = "train-launch"

    def retrain(self, version: Version) -> None:
        """Fill the form from a stored version's own training config (a new version of it)."""
        config = version.path / TRAINING_CONFIG_FILE
        if not config.is_file():
            self.app.notify(f"{version.ref} has no training config (it was imported or merged)", severity="warning")
            return
        self.pick_config(config, version.ref)

    # ---- launching --------------------------------------------------------------------------------
    @on(Button.Pressed, "#launch")
    def _launch_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_launch()

    def action_launch(self) -> None:
        form = self.query_one(ConfigForm)
        if form.resolved is None:
            self.app.notify("Pick a config first.", severity="warning")
            return
        try:
            values = form.values()
        except ValueError as exc:
            self.app.show_error(exc)
            return
        overrides = train_config.overrides(form.resolved, values)
        if form.continue_from_weights:
            overrides.append(f"init_from={form.retrain_ref}")
        run_dir = new_run_dir(self.app.runs_dir, values["name"])
        process = TrainingProcess(train_command(form.source, overrides, run_dir, self.app.store_root), run_dir)
        process.start()
        run = self.watcher.track(run_dir, owned=True)
        run.name = values["name"]
        self.processes[run.run_id] = process
        self.runs[run.run_id] = copy.deepcopy(run)
        self.shown_run = run.run_id
        self.wait_for(run.run_id, process)
        self._render_runs()
        self.query_one("#train-tabs", TabbedContent).active = "train-runs"
        self.query_one("#runs-table", DataTable).focus()

    @work(thread=True, exit_on_error=False, group="training")
    def wait_for(self, run_id: str, process: TrainingProcess) -> None:
        self.post_message(self.TrainingEnded(run_id, process.wait()))

    def on_train_pane_training_ended(self, message: TrainingEnded) -> None:
        self.poll_runs()
        run = self.runs.get(message.run_id)
        outcome = message.outcome
        if run is None:
            return
        if outcome.returncode == 0:
            run.status = "finished"
            run.ref = (outcome.result or {}).get("ref")
            if run.ref:
                # The run's view stays: its final curves and test metrics are what one looks at
                # now. The Store is told, and ``o`` opens the version there.
                self.post_message(self.VersionReady(run.ref, jump=False))
                self.list_configs()  # the new version's config is one to start from
        elif self.processes[message.run_id].cancelled:
            run.status = "cancelled"
            self.app.notify(f"cancelled {run.name}")
        else:
            run.status, run.error, run.hint = "failed", outcome.error, outcome.hint
            from adapters_store.errors import HintedError

            self.app.show_error(HintedError(f"training {run.name} failed: {outcome.error}", outcome.hint))
        self._render_runs()

    # ---- watching ---------------------------------------------------------------------------------
    def poll_runs(self) -> None:
        self._poll()

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll(self) -> None:
        changed = self.watcher.poll()
        if changed:
            self.post_message(self.RunsChanged([copy.deepcopy(run) for run in changed]))

    def on_train_pane_runs_changed(self, message: RunsChanged) -> None:
        for snap in message.runs:
            mine = self.runs.get(snap.run_id)
            if mine is not None:
                # What the process told us outranks the log: a run killed before it could log
                # ``end`` has still ended.
                snap.owned = snap.owned or mine.owned
                snap.ref = snap.ref or mine.ref
                if mine.status in FINAL and snap.status not in FINAL:
                    snap.status, snap.error = mine.status, mine.error
                snap.hint = snap.hint or mine.hint
            self.runs[snap.run_id] = snap
        self._render_runs()

    def _render_runs(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        now = self.app.clock()
        ordered = sorted(self.runs.values(), key=lambda r: r.run_id, reverse=True)
        keep = self.shown_run
        rows = []
        for run in ordered:
            status = run.display_status(now)
            progress = f"{run.step}/{run.total_steps}" if run.total_steps else "—"
            metric = ""
            if run.evals:
                metric = headline_text({run.evals[-1]["split"] or "dev": run.evals[-1]["metrics"]})
            name = Text(run.name or "?") + (Text(f" → {run.ref}", style="green") if run.ref else Text(""))
            rows.append(([name, Text(status, style=STATUS_STYLES.get(status, "")), progress, metric,
                          age(run.started, now), Text(run.run_id, style="dim")], run.run_id))
        fill_table(table, RUN_COLUMNS, rows, priority=RUN_PRIORITY)
        ids = [r.run_id for r in ordered]
        if keep in ids:
            table.move_cursor(row=ids.index(keep))
        elif ids:
            self.shown_run = ids[0]
        self.query_one(RunView).show(self.runs.get(self.shown_run) if self.shown_run else None, now)

    @on(DataTable.RowHighlighted, "#runs-table")
    def _run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value != self.shown_run:
            self.shown_run = event.row_key.value
            self.query_one(RunView).show(self.runs.get(self.shown_run), self.app.clock())

    # ---- cancel and open --------------------------------------------------------------------------
    @on(Button.Pressed, "#cancel-run")
    def _cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_cancel()

    @on(Button.Pressed, "#open-version")
    def _open_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_open_version()

    def action_cancel(self) -> None:
        """Ask first: a cancelled run's training so far is lost (it is not stored)."""
        run = self.runs.get(self.shown_run or "")
        process = self.processes.get(self.shown_run or "")
        if process is None or not process.running:
            why = "it was not started here" if run and run.status == "running" else "it is not running"
            self.app.notify(f"Cannot cancel this run: {why}.", severity="warning")
            return
        name = (run.name if run else None) or self.shown_run
        progress = f" at step {run.step}/{run.total_steps}" if run and run.total_steps else ""
        detail = f"Training stops{progress} and nothing is stored (the run's log stays in the runs directory)."

        def answer(yes: bool | None) -> None:
            if yes and process.running:
                self.cancel(process)

        self.app.push_screen(ConfirmModal(f"Cancel the training run {name}?", detail, confirm="Cancel run",
                                          danger=True, keep="Keep training"), answer)

    @work(thread=True, exit_on_error=False, group="cancel")
    def cancel(self, process: TrainingProcess) -> None:
        process.cancel()

    def action_open_version(self) -> None:
        run = self.runs.get(self.shown_run or "")
        if run is None or not run.ref:
            self.app.notify("This run has no stored version (yet).", severity="warning")
            return
        self.post_message(self.VersionReady(run.ref, jump=True))

    def cancel_all(self) -> None:
        """Interrupt every training and sweep this TUI started (on quit)."""
        for process in self.processes.values():
            process.cancel(grace_s=3.0)
        for view in self.query(SweepsView):
            view.cancel_all()

    def on_unmount(self) -> None:
        # However the app ends, no training it started outlives it unseen.
        self.cancel_all()

