"""One adapter's answer in the playground: generated text streaming in, or a label with a
probability bar per class, and how long it took."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Label, ProgressBar, Static

from adapters_tui.widgets import PartsText


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


class ComparePane(Vertical):
    """Fed from a worker thread through its messages; every update runs on the UI thread."""

    class Task(Message):
        def __init__(self, task: str):
            super().__init__()
            self.task = task

    class Piece(Message):
        def __init__(self, text: str):
            super().__init__()
            self.text = text

    class Classified(Message):
        def __init__(self, result: dict, seconds: float):
            super().__init__()
            self.result, self.seconds = result, seconds

    class Generated(Message):
        def __init__(self, seconds: float, first_piece_s: float | None, pieces: int):
            super().__init__()
            self.seconds, self.first_piece_s, self.pieces = seconds, first_piece_s, pieces

    class Failed(Message):
        def __init__(self, error: BaseException):
            super().__init__()
            self.error = error

    def __init__(self, ref: str, **kwargs):
        super().__init__(classes="compare-pane", **kwargs)
        self.ref = ref
        self.text = ""
        self.kind: str | None = None  # the adapter's task, once known
        self.result: dict | None = None

    def compose(self) -> ComposeResult:
        yield Label(Text(self.ref, style="bold"), classes="pane-title")
        yield Static(Text("waiting…", style="dim"), classes="pane-status")
        yield VerticalScroll(Static("", classes="pane-text"), classes="pane-body")

    def on_compare_pane_task(self, message: Task) -> None:
        self.kind = message.task
        self.query_one(".pane-status", Static).update(Text(f"{message.task} · running…", style="dim"))

    def on_compare_pane_piece(self, message: Piece) -> None:
        self.text += message.text
        self.query_one(".pane-text", Static).update(Text(self.text))
        self.query_one(".pane-body", VerticalScroll).scroll_end(animate=False)

    def on_compare_pane_generated(self, message: Generated) -> None:
        parts = [self.kind or "generation"]
        if message.first_piece_s is not None:
            parts.append(f"first token {_ms(message.first_piece_s)}")
        parts += [f"total {_ms(message.seconds)}", f"{message.pieces} pieces"]
        self.query_one(".pane-status", Static).update(PartsText(parts, style="green"))

    def on_compare_pane_classified(self, message: Classified) -> None:
        self.show_classification(message.result, message.seconds)

    def show_classification(self, result: dict, seconds: float) -> None:
        self.result = result
        self.query_one(".pane-status", Static).update(
            PartsText(["classification", f"latency {_ms(seconds)}"], style="green"))
        body = self.query_one(".pane-body", VerticalScroll)
        body.remove_children()
        ranked = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])
        rows = [Label(Text.assemble("→ ", (result["label"], "bold")), classes="pane-label")]
        for label, p in ranked:
            bar = ProgressBar(total=1.0, show_eta=False, show_percentage=False, classes="prob-bar")
            bar.progress = p
            text = Text.assemble((f"{p:6.1%} ", "bold"), label)
            rows.append(Horizontal(Label(text, classes="prob-label"), bar, classes="prob-row"))
        body.mount_all(rows)

    def on_compare_pane_failed(self, message: Failed) -> None:
        text = getattr(message.error, "message", None) or str(message.error)
        self.query_one(".pane-status", Static).update(Text(f"failed: {text}", style="red"))
