"""The details pane of the Store screen: lineage (and merge recipe), the resolved config, metrics
per class, and files with their sizes, one tab each."""

from __future__ import annotations

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static, TabbedContent, TabPane

from adapters_store import Version
from adapters_tui.catalog import details
from adapters_tui.widgets import fit_columns


def _pairs(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None,
                  pad_edge=False, expand=True)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, Text(value))
    return table


class FittedGrid:
    """A table of short cells that fits the width it is given by leaving out its least important
    columns (lowest ``priority`` stays longest), and says which ones it left out: numbers folded
    over two lines read as other numbers. The first column is cut with an ellipsis if it alone
    is still too wide."""

    def __init__(self, title: str, headers: list[str], rows: list[tuple[str, ...]],
                 priority: list[int] | None = None, text_columns: int = 1):
        self.title, self.headers, self.rows = title, headers, rows
        self.priority = priority
        self.text_columns = text_columns  # left-aligned; the rest are numbers, right-aligned

    def __rich_console__(self, console, options):
        widths = [max([cell_len(h)] + [cell_len(row[i]) for row in self.rows]) for i, h in enumerate(self.headers)]
        kept = fit_columns(widths, options.max_width, self.priority)
        table = Table(title=self.title, title_justify="left", title_style="bold", box=None, pad_edge=False,
                      header_style="bold", expand=True)
        for i in kept:
            table.add_column(self.headers[i], justify="left" if i < self.text_columns else "right",
                             no_wrap=True, overflow="ellipsis", min_width=min(widths[i], 8) if i else 4)
        for row in self.rows:
            table.add_row(*(Text(row[i]) for i in kept))
        yield table
        left_out = [self.headers[i] for i in range(len(self.headers)) if i not in kept]
        if left_out:
            yield Text(f"({', '.join(left_out)}: not shown at this width)", style="dim")


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
            # One column per split: half the rows, and dev and test side by side.
            splits = list(dict.fromkeys(split for split, _, _ in d.metrics))
            values = {(split, key): value for split, key, value in d.metrics}
            keys = list(dict.fromkeys(key for _, key, _ in d.metrics))
            metric_parts.append(FittedGrid("metrics", ["metric", *(s or "value" for s in splits)],
                                           [(key, *(values.get((s, key), "") for s in splits)) for key in keys]))
        if d.per_class:
            split = d.per_class[0][0]
            metric_parts += [Text(""), FittedGrid(f"per class ({split})" if split else "per class",
                                                  ["class", "F1", "P", "R", "n"],
                                                  [(name, f1, p, r, n) for _, name, p, r, f1, n in d.per_class],
                                                  priority=[0, 1, 3, 4, 2])]
        bodies["metrics"].update(Group(*metric_parts) if metric_parts else Text("No metrics recorded.", style="dim"))
        bodies["files"].update(FittedGrid("files", ["file", "size", "sha256"],
                                          [(rel, size, sha) for rel, size, sha in d.files], priority=[0, 1, 2]))
