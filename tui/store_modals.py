"""Dialogs of the Store screen: tag, untag, export, verify results, and a side-by-side diff."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Label, Select, Static

from adapters_store import Version
from adapters_tui.catalog import diff_rows
from adapters_tui.widgets import ReportsWorkerErrors, TextField, fill_table


class _Dialog(ModalScreen):
    """A dialog that closes with None on Escape or Cancel."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "dialog-cancel":
            self.dismiss(None)
        else:
            self.submit()

    def submit(self) -> None:  # overridden by dialogs that return a value
        self.dismiss(None)

    def buttons(self, ok: str) -> ComposeResult:
        with Horizontal(classes="dialog-buttons"):
            yield Button(ok, variant="primary", id="dialog-ok", compact=True)
            yield Button("Cancel", id="dialog-cancel", compact=True)


class TagModal(_Dialog):
    """Ask for an alias to point at a version; dismisses with the alias or None."""

    def __init__(self, version: Version):
        super().__init__()
        self.version = version

    def compose(self) -> ComposeResult:
        with Vertical(id="tag-dialog", classes="dialog"):
            yield Label(Text(f"Tag {self.version.ref}"), classes="dialog-title")
            yield Static("An alias such as prod or staging; it moves here if another version has it.")
            yield TextField(placeholder="alias", id="tag-alias")
            yield from self.buttons("Tag")

    def on_mount(self) -> None:
        self.query_one("#tag-alias", TextField).focus()

    def on_input_submitted(self, event: TextField.Submitted) -> None:
        event.stop()
        self.submit()

    def submit(self) -> None:
        alias = self.query_one("#tag-alias", TextField).value.strip()
        if alias:
            self.dismiss(alias)


class UntagModal(_Dialog):
    """Pick which of a version's aliases to remove."""

    def __init__(self, version: Version):
        super().__init__()
        self.version = version

    def compose(self) -> ComposeResult:
        with Vertical(id="untag-dialog", classes="dialog"):
            yield Label(Text(f"Remove an alias of {self.version.ref}"), classes="dialog-title")
            yield Select([(a, a) for a in self.version.aliases], value=self.version.aliases[0], allow_blank=False,
                         id="untag-alias", compact=True)
            yield from self.buttons("Untag")

    def submit(self) -> None:
        self.dismiss(str(self.query_one("#untag-alias", Select).value))


class ExportModal(_Dialog):
    """Ask where to copy a version as a plain PEFT directory."""

    def __init__(self, version: Version, default_dir: Path):
        super().__init__()
        self.version, self.default_dir = version, default_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog", classes="dialog"):
            yield Label(Text(f"Export {self.version.ref}"), classes="dialog-title")
            yield Static("A new or empty directory; it receives the PEFT files and manifest.json.")
            yield TextField(str(self.default_dir / f"{self.version.name}-{self.version.number}"), id="export-dest")
            yield from self.buttons("Export")

    def on_mount(self) -> None:
        self.query_one("#export-dest", TextField).focus()

    def on_input_submitted(self, event: TextField.Submitted) -> None:
        event.stop()
        self.submit()

    def submit(self) -> None:
        dest = self.query_one("#export-dest", TextField).value.strip()
        if dest:
            self.dismiss(Path(dest).expanduser())


class ProblemsModal(_Dialog):
    """What ``verify`` found: missing or corrupted files, stray directories."""

    def __init__(self, subject: str, problems: list):
        super().__init__()
        self.subject, self.problems = subject, problems

    def compose(self) -> ComposeResult:
        with Vertical(id="problems-dialog", classes="dialog"):
            yield Label(Text(f"verify {self.subject}: {len(self.problems)} problem(s)"), classes="dialog-title")
            yield DataTable(id="problems-table", cursor_type="row")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="dialog-cancel", compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        fill_table(table, ["kind", "message"], [([p.kind, Text(p.message)], None) for p in self.problems],
                   max_width=120)
        table.focus()


class DiffScreen(ReportsWorkerErrors, _Dialog):
    """Two versions side by side: every config, lineage, metric and file entry that differs."""

    def __init__(self, store_root: Path, refs: list[str], a: str, b: str):
        super().__init__()
        self.store_root, self.refs, self.a, self.b = store_root, refs, a, b

    def compose(self) -> ComposeResult:
        options = [(r, r) for r in self.refs]
        with Vertical(id="diff-dialog", classes="dialog"):
            yield Label("Compare two versions", classes="dialog-title")
            with Horizontal(id="diff-pickers"):
                yield Select(options, value=self.a, allow_blank=False, id="diff-a", compact=True)
                yield Label(" vs ")
                yield Select(options, value=self.b, allow_blank=False, id="diff-b", compact=True)
            yield Static("", id="diff-summary")
            yield DataTable(id="diff-table", cursor_type="row", zebra_stripes=True)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="dialog-cancel", compact=True)

    def on_mount(self) -> None:
        self.compare()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        a, b = self.query_one("#diff-a", Select).value, self.query_one("#diff-b", Select).value
        if (a, b) != (self.a, self.b):
            self.a, self.b = str(a), str(b)
            self.compare()

    @work(thread=True, exclusive=True, exit_on_error=False, group="diff")
    def compare(self) -> None:
        from adapters_store import Store

        with Store(self.store_root) as s:
            diff = s.diff(self.a, self.b)
        self.app.call_from_thread(self.show_diff, diff)

    def show_diff(self, diff: dict) -> None:
        rows = diff_rows(diff)
        same = "same content" if diff["same_content"] else "different content"
        self.query_one("#diff-summary", Static).update(
            Text(f"{diff['a']} vs {diff['b']}: {same}, {len(rows)} entries differ"))
        table = self.query_one("#diff-table", DataTable)
        fill_table(table, ["section", "key", diff["a"], diff["b"]],
                   [([Text(cell) for cell in row], None) for row in rows])
