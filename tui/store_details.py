"""The details pane of the Store screen: lineage (and merge recipe), the resolved config, metrics
per class, and files with their sizes, one tab each."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static, TabbedContent, TabPane

from store import Version
from tui.catalog import details


def _pairs(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None,
                  pad_edge=False, expand=True)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, Text(value))
    return table


def _grid(title: str, headers: list[str], rows: list[tuple[str, ...]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False,
                  header_style="bold", expand=True)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 2 else "right", overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table


class VersionDetails(Vertical):
    """Shows one Version; ``show(None)`` clears it."""

    def __init__(self, version: Version | None = None, **kwargs):
        super().__init__(**kwargs)
        self.version = version
        self._ready = False  # children composed: set in on_mount

    def on_mount(self) -> None:
        self._ready = True
        self.show(self.version)

    def compose(self) -> ComposeResult:
        with TabbedContent(id="details-tabs"):
            for name in ("lineage", "config", "metrics", "files"):
                with TabPane(name.capitalize(), id=f"details-{name}"):
                    with VerticalScroll():
                        yield Static(id=f"details-{name}-body")

    def show(self, version: Version | None) -> None:
        self.version = version
        if not self._ready:  # on_mount shows it
            return
        bodies = {name: self.query_one(f"#details-{name}-body", Static)
                  for name in ("lineage", "config", "metrics", "files")}
        if version is None:
            for body in bodies.values():
                body.update(Text("No version selected.", style="dim"))
            return
        d = details(version)
        from rich.console import Group

        lineage = [_pairs(version.ref, d.summary), Text(""), _pairs("lineage", d.lineage)]
        if d.merge:
            lineage += [Text(""), _pairs("merged from", d.merge)]
        bodies["lineage"].update(Group(*lineage))
        from rich.syntax import Syntax  # pygments: loaded on first use, not at start

        bodies["config"].update(Syntax(d.config, "yaml", theme="ansi_dark", word_wrap=True,
                                       background_color="default"))
        metric_parts = []
        if d.metrics:
            metric_parts.append(_grid("metrics", ["split", "metric", "value"], d.metrics))
        if d.per_class:
            metric_parts += [Text(""), _grid("per class", ["split", "class", "P", "R", "F1", "n"], d.per_class)]
        bodies["metrics"].update(Group(*metric_parts) if metric_parts else Text("No metrics recorded.", style="dim"))
        bodies["files"].update(_grid("files", ["file", "size", "sha256"],
                                     [(rel, size, sha) for rel, size, sha in d.files]))
