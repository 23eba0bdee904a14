"""Small widgets shared by the screens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.message import Message
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


class FitTable(DataTable):
    """A DataTable that says when its width changes (a resize, its tab shown), so its owner can
    choose again which columns fit (``fill_table(..., priority=...)``)."""

    class Resized(Message):
        def __init__(self, table: FitTable):
            super().__init__()
            self.table = table

    _fitted_width = -1

    def on_resize(self) -> None:
        if self.size.width != self._fitted_width:
            self._fitted_width = self.size.width
            self.post_message(self.Resized(self))


class FittedLine:
    """One line of parts joined by " · ": as many as fit the width it is given, the least
    important (highest ``priority``) left out first, rather than cut off mid-word at the edge."""

    def __init__(self, parts: Sequence[str], priority: Sequence[int] | None = None, sep: str = " · "):
        self.parts, self.priority, self.sep = list(parts), priority, sep

    def __rich_console__(self, console, options):
        widths = [cell_len(part) for part in self.parts]
        kept = fit_columns(widths, options.max_width + cell_len(self.sep), self.priority, gap=cell_len(self.sep))
        yield Text(self.sep.join(self.parts[i] for i in kept), no_wrap=True, overflow="ellipsis")


class PartsText:
    """Parts joined by " · " that wrap only between parts, so "42 ms" never becomes "42" over
    "ms" in a narrow pane. ``str()`` is the one-line text."""

    def __init__(self, parts: Sequence[str], style: str = "", sep: str = " · "):
        self.parts, self.style, self.sep = list(parts), style, sep

    def __str__(self) -> str:
        return self.sep.join(self.parts)

    def __rich_console__(self, console, options):
        lines: list[str] = []
        for part in self.parts:
            joined = f"{lines[-1]}{self.sep}{part}" if lines else part
            if lines and cell_len(joined) <= options.max_width:
                lines[-1] = joined
            else:
                lines.append(part)
        yield Text("\n".join(lines), style=self.style)


Row = tuple[list, str | None]  # (cells, row key)


def fit_columns(widths: Sequence[int], available: int | None, priority: Sequence[int] | None = None,
                gap: int = 2) -> list[int]:
    """The indexes of the columns to show, in their order: the most important ones (lowest
    ``priority``; by default the leftmost) that fit side by side in ``available`` cells, each
    taking its width plus ``gap``. The most important column is kept even when it alone is too
    wide. ``available`` None (not laid out yet): all of them."""
    if available is None or available <= 0:
        return list(range(len(widths)))
    ranks = priority if priority is not None else range(len(widths))
    kept: list[int] = []
    used = 0
    for i in sorted(range(len(widths)), key=lambda i: ranks[i]):
        if not kept or used + widths[i] + gap <= available:
            kept.append(i)
            used += widths[i] + gap
    return sorted(kept)


def fill_table(table: DataTable, columns: list[str], rows: list[Row], max_width: int = 48,
               priority: Sequence[int] | None = None) -> list[str]:
    """Replace a DataTable's columns and rows, each column as wide as its widest cell (up to
    ``max_width``). A DataTable sizes auto-width columns itself, but only later, when idle, and a
    frame painted before that keeps header-wide columns; widths given up front are final.

    With ``priority`` (one rank per column, lower is more important), columns that do not fit the
    table's width are left out, least important first, rather than cut off at the edge; the
    details pane shows every field. Returns the labels of the columns shown."""
    widths = [cell_len(label) for label in columns]
    for cells, _ in rows:
        for i, cell in enumerate(cells):
            text = cell.plain if isinstance(cell, Text) else str(cell)
            widths[i] = max(widths[i], min(max_width, cell_len(text)))
    available = table.scrollable_content_region.width if priority is not None else 0
    kept = fit_columns(widths, available or None, priority, gap=2 * table.cell_padding)
    table.clear(columns=True)
    for i in kept:
        table.add_column(columns[i], width=widths[i])
    for cells, key in rows:
        table.add_row(*(cells[i] for i in kept), key=key)
    return [columns[i] for i in kept]
