"""The merge dialog of the Store screen: pick versions, weights, method, density and a name; the
merge itself (``adapters.api.merge``) runs in a worker of the Store pane."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Select, SelectionList, Static

from adapters.api import DENSITY_METHODS, MERGE_METHODS  # torch-free: the merge code loads torch when run
from adapters_store import Version
from adapters_tui.store_modals import _Dialog
from adapters_tui.widgets import TextField


@dataclass(frozen=True)
class MergeRequest:
    refs: list[str]
    weights: list[float] | None
    method: str
    density: float | None
    name: str


def parse_request(refs: list[str], weights: str, method: str, density: str, name: str) -> MergeRequest:
    """The dialog's entries as a merge request; ValueError says what is wrong with them."""
    if len(refs) < 2:
        raise ValueError("pick at least two versions to merge")
    if not name.strip():
        raise ValueError("the merged adapter needs a name")
    parsed_weights = None
    if weights.strip():
        try:
            parsed_weights = [float(w) for w in weights.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"weights must be numbers, e.g. 0.7, 0.3 (got {weights!r})") from None
        if len(parsed_weights) != len(refs):
            raise ValueError(f"{len(parsed_weights)} weights for {len(refs)} versions: give one per version")
    parsed_density = None
    if density.strip():
        try:
            parsed_density = float(density)
        except ValueError:
            raise ValueError(f"density must be a number in (0, 1], got {density!r}") from None
    return MergeRequest(refs, parsed_weights, method, parsed_density, name.strip())


class MergeModal(_Dialog):
    """Dismisses with a MergeRequest, or None on cancel."""

    def __init__(self, versions: list[Version], selected: Version | None):
        super().__init__()
        self.versions, self.selected = versions, selected

    def compose(self) -> ComposeResult:
        chosen = self.selected.ref if self.selected else None
        default_name = f"{self.selected.name}-merged" if self.selected else ""
        with Vertical(id="merge-dialog", classes="dialog"):
            yield Label("Merge versions", classes="dialog-title")
            yield Static(Text("Versions (space selects; merged in list order). All must share base, method, "
                              "task and labels.", style="dim"))
            yield SelectionList[str](*[(v.ref, v.ref, v.ref == chosen) for v in self.versions], id="merge-refs")
            with Horizontal(classes="merge-row"):
                yield Label("weights", classes="form-label")
                yield TextField(placeholder="one per version, e.g. 0.7, 0.3 (empty: equal)", id="merge-weights")
            with Horizontal(classes="merge-row"):
                yield Label("method", classes="form-label")
                yield Select([(m, m) for m in MERGE_METHODS], value="linear", allow_blank=False,
                             id="merge-method", compact=True)
            with Horizontal(classes="merge-row", id="merge-density-row"):
                yield Label("density", classes="form-label")
                yield TextField(placeholder="share of values kept (default 0.5)", id="merge-density")
            with Horizontal(classes="merge-row"):
                yield Label("name", classes="form-label")
                yield TextField(default_name, id="merge-name")
            yield Static("", id="merge-problem")
            yield from self.buttons("Merge")

    def on_mount(self) -> None:
        self.query_one("#merge-density-row").display = False
        self.query_one("#merge-refs", SelectionList).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.query_one("#merge-density-row").display = event.value in DENSITY_METHODS

    def submit(self) -> None:
        order = [v.ref for v in self.versions]
        picked = sorted(self.query_one("#merge-refs", SelectionList).selected, key=order.index)
        method = str(self.query_one("#merge-method", Select).value)
        density = self.query_one("#merge-density", TextField).value if method in DENSITY_METHODS else ""
        try:
            request = parse_request(picked, self.query_one("#merge-weights", TextField).value, method, density,
                                    self.query_one("#merge-name", TextField).value)
        except ValueError as exc:
            self.query_one("#merge-problem", Static).update(Text(str(exc), style="bold red"))
            return
        self.dismiss(request)
