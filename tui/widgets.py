"""Small widgets shared by the screens."""

from __future__ import annotations

from typing import Callable

from rich.cells import cell_len
from rich.text import Text
from textual.widget import Widget
from textual.widgets import DataTable, Input
from textual.worker import Worker, WorkerState


class TextField(Input):
    """A one-line compact Input whose cursor blinks only when the app allows it (snapshot tests
    turn blinking off so screenshots do not depend on when they are taken)."""

    def __init__(self, value: str | None = None, placeholder: str = "", **kwargs):
        kwargs.setdefault("compact", True)
        super().__init__(value=value, placeholder=placeholder, **kwargs)

    def on_mount(self) -> None:
        self.cursor_blink = getattr(self.app, "cursor_blink", True)


class ReportsWorkerErrors:
    """Mixin for widgets that run workers: a worker that raises shows the error modal (with the
    error's hint) instead of taking the app down."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.show_error(event.worker.error)


class Deferred(Widget):
    """Stands in for the widget ``build()`` returns until the first frame is on screen, then
    swaps it in (like textual.lazy.Lazy, but the widget's modules are imported then too)."""

    DEFAULT_CSS = "Deferred { display: none; }"

    def __init__(self, build: Callable[[], Widget]):
        super().__init__()
        self.build = build

    def on_mount(self) -> None:
        self.call_after_refresh(self._swap_in)

    async def _swap_in(self) -> None:
        parent = self.parent
        # Skipped when the app is already closing (quit within the first frames): a pane
        # mounted then would not get its children and its on_mount would fail.
        if not isinstance(parent, Widget) or not parent.is_attached or not self.app.is_running:
            return
        await parent.mount(self.build(), after=self)
        await self.remove()


Row = tuple[list, str | None]  # (cells, row key)


def fill_table(table: DataTable, columns: list[str], rows: list[Row], max_width: int = 48) -> None:
    """Replace a DataTable's columns and rows, each column as wide as its widest cell (up to
    ``max_width``). A DataTable sizes auto-width columns itself, but only later, when idle, and a
    frame painted before that keeps header-wide columns; widths given up front are final."""
    widths = [cell_len(label) for label in columns]
    for cells, _ in rows:
        for i, cell in enumerate(cells):
            text = cell.plain if isinstance(cell, Text) else str(cell)
            widths[i] = max(widths[i], min(max_width, cell_len(text)))
    table.clear(columns=True)
    for label, width in zip(columns, widths):
        table.add_column(label, width=width)
    for cells, key in rows:
        table.add_row(*cells, key=key)
