"""Modal screens used everywhere: an error with its hint, a yes/no confirmation, and help."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Label, Static

from adapters_tui.widgets import fill_table


def describe_error(error: BaseException) -> tuple[str, str, str | None]:
    """(title, message, hint) for any exception: the project's HintedError carries message and
    hint; anything else is shown with its type, since its message alone may not say enough."""
    message = getattr(error, "message", None)
    hint = getattr(error, "hint", None)
    if message is None:
        message = str(error) or type(error).__name__
        return f"Error: {type(error).__name__}", message, hint
    return "Error", str(message), hint


class ErrorModal(ModalScreen[None]):
    """What went wrong and, when known, what to do next."""

    BINDINGS = [Binding("escape,enter", "dismiss_error", "Close")]

    def __init__(self, title: str, message: str, hint: str | None = None):
        super().__init__()
        self.error_title, self.message, self.hint = title, message, hint

    def compose(self) -> ComposeResult:
        with Vertical(id="error-dialog", classes="dialog"):
            yield Label(self.error_title, classes="dialog-title")
            # Messages name paths and refs with brackets: never parse them as markup.
            yield Static(Text(self.message), id="error-message")
            if self.hint:
                yield Static(Text.assemble(("hint: ", "bold"), self.hint), id="error-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", variant="primary", id="error-ok", compact=True)

    def on_mount(self) -> None:
        self.query_one("#error-ok", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_dismiss_error(self) -> None:
        self.dismiss(None)


class ConfirmModal(ModalScreen[bool]):
    """A question with a confirm and a cancel button; dismisses with True only on confirm."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, detail: str = "", confirm: str = "OK", danger: bool = False,
                 keep: str = "Cancel"):
        super().__init__()
        self.question, self.detail, self.confirm_label, self.danger = question, detail, confirm, danger
        self.keep_label = keep

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog", classes="dialog"):
            yield Label(Text(self.question), classes="dialog-title")
            if self.detail:
                yield Static(Text(self.detail), id="confirm-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.confirm_label, variant="error" if self.danger else "primary", id="confirm-yes",
                             compact=True)
                yield Button(self.keep_label, id="confirm-no", compact=True)

    def on_mount(self) -> None:
        # Destructive actions start on Cancel, so a stray Enter does not remove anything.
        self.query_one("#confirm-no" if self.danger else "#confirm-yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_cancel(self) -> None:
        self.dismiss(False)


class HelpScreen(ModalScreen[None]):
    """Every key binding, section by section, taken from the widgets' own BINDINGS."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, sections: Iterable[tuple[str, list[tuple[str, str]]]], notes: list[str] | None = None):
        super().__init__()
        self.sections = list(sections)
        self.notes = notes or []

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog", classes="dialog"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(id="help-body"):
                yield DataTable(id="help-table", cursor_type="none", zebra_stripes=True)
                for note in self.notes:
                    yield Static(Text(note), classes="help-note")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="help-close", compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        rows = [([section if i == 0 else "", key, description], None)
                for section, keys in self.sections for i, (key, description) in enumerate(keys)]
        fill_table(table, ["where", "key", "does"], rows)
        self.query_one("#help-close", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
