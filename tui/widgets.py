"""Small widgets shared by the screens."""

from __future__ import annotations

from textual.widgets import Input
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
