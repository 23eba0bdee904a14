"""The start-a-sweep dialog of the Sweeps view: a config (one of the Train tab's, stored or from
the configs directory, or any file typed in), the space file, trials, pruner and workers. It
dismisses with a SweepRequest; the view launches ``adapters sweep`` from it."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Select, Static

from adapters_tui.store_modals import _Dialog
from adapters_tui.sweeps import SPACE_EXAMPLE, parse_request
from adapters_tui.train_config import ConfigEntry
from adapters_tui.widgets import TextField

DEFAULT_TRIALS = 16  # the CLI's default


class StartSweepModal(_Dialog):
    """Dismisses with a SweepRequest, or None on cancel; entries that do not make one are named
    under the fields and the dialog stays open."""

    def __init__(self, configs: list[ConfigEntry], pruners: tuple[str, ...], chosen: Path | None = None):
        super().__init__()
        self.configs, self.pruners = configs, pruners or ("median",)
        keys = [str(e.path) for e in configs]
        self.chosen = str(chosen) if chosen is not None and str(chosen) in keys else (keys[0] if keys else None)

    def compose(self) -> ComposeResult:
        with Vertical(id="sweep-dialog", classes="dialog"):
            yield Label("Start a sweep", classes="dialog-title")
            yield Static(Text("Every finished trial is stored as a version of the config's name; NAME@best is "
                              "the best. The same config and space again continue the same sweep.", style="dim"))
            with Horizontal(classes="sweep-row"):
                yield Label("config", classes="form-label")
                yield Select([(e.label, str(e.path)) for e in self.configs], value=self.chosen or Select.NULL,
                             prompt="no configs: type a path below", id="sweep-config", compact=True)
            with Horizontal(classes="sweep-row"):
                yield Label("or config file", classes="form-label")
                yield TextField(placeholder="path/to/config.yaml (wins over the list)", id="sweep-config-path")
            with Horizontal(classes="sweep-row"):
                yield Label("space file", classes="form-label")
                yield TextField(placeholder="space.yaml: " + SPACE_EXAMPLE, id="sweep-space")
            with Horizontal(classes="sweep-row"):
                yield Label("trials", classes="form-label")
                yield TextField(str(DEFAULT_TRIALS), type="integer", id="sweep-trials")
            with Horizontal(classes="sweep-row"):
                yield Label("pruner", classes="form-label")
                yield Select([(p, p) for p in self.pruners], allow_blank=False,
                             value="median" if "median" in self.pruners else self.pruners[0], id="sweep-pruner",
                             compact=True)
            with Horizontal(classes="sweep-row"):
                yield Label("workers", classes="form-label")
                yield TextField("1", type="integer", id="sweep-workers")
            yield Static("", id="sweep-problem")
            yield from self.buttons("Start")

    def on_mount(self) -> None:
        self.query_one("#sweep-space", TextField).focus()

    def on_input_submitted(self, event: TextField.Submitted) -> None:
        event.stop()
        self.submit()

    def set_entries(self, **entries: str) -> None:
        """Fill fields by name (config_path, space, trials, workers; config and pruner pick from
        their lists), as typing would."""
        for name, value in entries.items():
            widget = self.query_one("#sweep-" + name.replace("_", "-"))
            widget.value = value

    def submit(self) -> None:
        chosen = self.query_one("#sweep-config", Select).value
        try:
            request = parse_request(Path(chosen) if isinstance(chosen, str) else None,
                                    self.query_one("#sweep-config-path", TextField).value,
                                    self.query_one("#sweep-space", TextField).value,
                                    self.query_one("#sweep-trials", TextField).value,
                                    str(self.query_one("#sweep-pruner", Select).value),
                                    self.query_one("#sweep-workers", TextField).value)
        except ValueError as exc:
            self.query_one("#sweep-problem", Static).update(Text(str(exc), style="bold red"))
            return
        self.dismiss(request)
