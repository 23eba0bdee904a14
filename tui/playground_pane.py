"""The Serve / playground screen: start an in-process engine or connect to ``adapters serve``;
load, unload and hot-swap adapters; send one input to several adapters side by side."""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Label, Select, Static, TabbedContent, TabPane

from adapters_tui.compare import ComparePane
from adapters_tui.formatting import human_size
from adapters_tui.widgets import FitTable, ReportsWorkerErrors, TextField, fill_table

RESIDENT_COLUMNS = ["ref", "state", "task", "method", "memory", "version"]
RESIDENT_PRIORITY = [0, 1, 3, 5, 2, 4]  # which stay when the table is narrow (lower stays longer)
STATE_STYLES = {"READY": "green", "LOADING": "yellow", "FAILED": "red"}


def split_refs(text: str) -> list[str]:
    """Refs typed as "a@1, b@prod c": commas or spaces between them; order kept, repeats dropped."""
    return list(dict.fromkeys(part for part in text.replace(",", " ").split() if part))


class PlaygroundPane(ReportsWorkerErrors, Vertical):
    BINDINGS = [
        Binding("r", "show('play-runtime')", "Runtime"),
        Binding("c", "show('play-compare')", "Compare"),
        Binding("ctrl+s", "send", "Send"),
        Binding("f5", "refresh_resident", "Refresh"),
    ]

    class Connected(Message):
        def __init__(self, backend):
            super().__init__()
            self.backend = backend

    class ResidentChanged(Message):
        """The resident adapters as ``backend`` reported them."""

        def __init__(self, backend, rows: list):
            super().__init__()
            self.backend, self.rows = backend, rows

    def __init__(self, server_url: str | None = None, api_key: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.backend = None
        self.server_url, self.api_key = server_url, api_key
        self.resident: list = []

    def compose(self) -> ComposeResult:
        with TabbedContent(id="play-tabs"):
            with TabPane("Runtime", id="play-runtime"):
                with Horizontal(classes="bar"):
                    yield Label("engine", classes="bar-label")
                    yield TextField(placeholder="base: built-in name, directory or HF id", id="engine-base")
                    yield Select([(q, q) for q in ("4bit", "8bit", "none")], value="4bit", allow_blank=False,
                                 id="engine-quant", compact=True)
                    yield Select([(d, d) for d in ("auto", "cpu", "cuda")], value="auto", allow_blank=False,
                                 id="engine-device", compact=True)
                    yield Button("Start", id="engine-start", variant="primary", compact=True)
                with Horizontal(classes="bar"):
                    yield Label("server", classes="bar-label")
                    yield TextField(self.server_url or "", placeholder="http://127.0.0.1:8000", id="server-url")
                    yield TextField(self.api_key or "", placeholder="API key (optional)", password=True,
                                    id="server-key")
                    yield Button("Connect", id="server-connect", variant="primary", compact=True)
                with Horizontal(classes="bar"):
                    yield Static(Text("Not running: start an engine or connect to a server.", style="dim"),
                                 id="runtime-status")
                    yield Button("Stop", id="runtime-stop", variant="error", compact=True)
                with Horizontal(classes="bar"):
                    yield Label("adapter", classes="bar-label")
                    yield TextField(placeholder="ref: name, name@3, name@prod, sha256:…", id="adapter-ref")
                    yield Button("Load", id="adapter-load", compact=True)
                    yield Button("Unload", id="adapter-unload", compact=True)
                    yield Button("Swap", id="adapter-swap", compact=True)
                yield FitTable(id="resident-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Compare", id="play-compare"):
                with Horizontal(classes="bar"):
                    yield Label("adapters", classes="bar-label")
                    yield TextField(placeholder="refs side by side: a@1, b@prod", id="compare-refs")
                    yield Label("max tokens", classes="bar-label")
                    yield TextField("48", type="integer", id="compare-max-tokens")
                with Horizontal(classes="bar"):
                    yield Label("input", classes="bar-label")
                    yield TextField(placeholder="text to classify or prompt to answer (Enter sends)",
                                    id="compare-input")
                    yield Button("Send", id="compare-send", variant="primary", compact=True)
                yield Horizontal(id="compare-panes")

    def on_mount(self) -> None:
        if not self.app.is_running:  # mounted (deferred) while the app shuts down: no children
            return
        table = self.query_one("#resident-table", DataTable)
        table.border_title = "resident adapters"
        fill_table(table, RESIDENT_COLUMNS, [])
        if self.server_url:  # `adapters tui --connect URL`
            self.connect(self.server_url, self.api_key)

    def action_show(self, tab: str) -> None:
        """A sub-tab; the Compare tab starts in its input field, where one types next."""
        self.query_one("#play-tabs", TabbedContent).active = tab
        self.query_one("#resident-table" if tab == "play-runtime" else "#compare-input").focus()

    def focus_main(self) -> None:
        """What Escape from a field comes back to: the resident table, or the Send button (the
        Compare tab has no table), so the tab's keys act again."""
        on_runtime = self.query_one("#play-tabs", TabbedContent).active == "play-runtime"
        self.query_one("#resident-table" if on_runtime else "#compare-send").focus()

    # ---- connecting -------------------------------------------------------------------------------
    @on(TextField.Submitted, "#engine-base")
    def _base_submitted(self, event: TextField.Submitted) -> None:
        self._start_pressed(event)

    @on(Button.Pressed, "#engine-start")
    def _start_pressed(self, event: Button.Pressed | TextField.Submitted) -> None:
        event.stop()
        base = self.query_one("#engine-base", TextField).value.strip()
        if not base:
            self.app.notify("Name a base model first.", severity="warning")
            return
        self.start_engine(base, str(self.query_one("#engine-quant", Select).value),
                          str(self.query_one("#engine-device", Select).value))

    def start_engine(self, base: str, quant: str = "4bit", device: str = "auto") -> None:
        self._set_status(f"starting an engine on {base}…")
        self._start_engine(base, quant, device)

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def _start_engine(self, base: str, quant: str, device: str) -> None:
        from adapters_tui.backends import EngineBackend

        try:
            backend = EngineBackend(base, quant=quant, device=device, store_root=self.app.store_root)
        except BaseException:
            self.app.call_from_thread(self._set_status, "the engine did not start")
            raise
        self.post_message(self.Connected(backend))

    @on(TextField.Submitted, "#server-url, #server-key")
    def _server_submitted(self, event: TextField.Submitted) -> None:
        self._connect_pressed(event)

    @on(Button.Pressed, "#server-connect")
    def _connect_pressed(self, event: Button.Pressed | TextField.Submitted) -> None:
        event.stop()
        url = self.query_one("#server-url", TextField).value.strip()
        if not url:
            self.app.notify("Type the server's URL first.", severity="warning")
            return
        self.connect(url, self.query_one("#server-key", TextField).value.strip() or None)

    def connect(self, url: str, api_key: str | None = None) -> None:
        self._set_status(f"connecting to {url}…")
        self._connect(url, api_key)

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def _connect(self, url: str, api_key: str | None) -> None:
        from adapters_tui.backends import HttpBackend

        try:
            backend = HttpBackend(url, api_key)
        except BaseException:
            self.app.call_from_thread(self._set_status, f"not connected to {url}")
            raise
        self.post_message(self.Connected(backend))

    def on_playground_pane_connected(self, message: Connected) -> None:
        self.stop_backend()
        self.backend = message.backend
        self._set_status(self.backend.label)
        self.refresh_resident()

    @on(Button.Pressed, "#runtime-stop")
    def _stop_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if self.backend is None:
            self.app.notify("Nothing is running.", severity="warning")
            return
        self.stop_backend()
        self._set_status("stopped")

    def stop_backend(self) -> None:
        """Close the HTTP client, or drop the engine (its memory goes with the last reference)."""
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.close()
        self.on_playground_pane_resident_changed(self.ResidentChanged(None, []))

    def _set_status(self, text: str) -> None:
        self.query_one("#runtime-status", Static).update(Text(text))

    def _need_backend(self):
        if self.backend is None:
            self.app.notify("Start an engine or connect to a server first.", severity="warning")
        return self.backend

    # ---- resident adapters ------------------------------------------------------------------------
    def action_refresh_resident(self) -> None:
        if self.backend is not None:
            self.refresh_resident()

    @work(thread=True, exclusive=True, group="resident", exit_on_error=False)
    def refresh_resident(self) -> None:
        backend = self.backend
        if backend is not None:
            self.post_message(self.ResidentChanged(backend, backend.adapters()))

    def on_fit_table_resized(self, message: FitTable.Resized) -> None:
        # The resident table chooses its columns by the width it has.
        self.on_playground_pane_resident_changed(self.ResidentChanged(self.backend, self.resident))

    def on_playground_pane_resident_changed(self, message: ResidentChanged) -> None:
        if message.backend is not self.backend:  # a late answer from a runtime since stopped
            return
        self.resident = message.rows
        table = self.query_one("#resident-table", DataTable)
        fill_table(table, RESIDENT_COLUMNS, [
            ([Text(row.ref), Text(row.state, style=STATE_STYLES.get(row.state, "")), row.task or "", row.method or "",
              human_size(row.bytes), row.version or ""], row.ref) for row in message.rows], priority=RESIDENT_PRIORITY)
        total = sum(r.bytes for r in message.rows)
        table.border_subtitle = f"{len(message.rows)} resident · {human_size(total)}" if message.rows else ""

    def _typed_ref(self) -> str | None:
        ref = self.query_one("#adapter-ref", TextField).value.strip()
        if not ref:
            self.app.notify("Type a ref first.", severity="warning")
        return ref or None

    def _selected_resident(self) -> str | None:
        table = self.query_one("#resident-table", DataTable)
        if not self.resident or table.cursor_row is None or table.cursor_row >= len(self.resident):
            return None
        return self.resident[table.cursor_row].ref

    @on(TextField.Submitted, "#adapter-ref")
    @on(Button.Pressed, "#adapter-load")
    def _load_pressed(self, event: Button.Pressed | TextField.Submitted) -> None:
        event.stop()
        ref = self._typed_ref()
        if ref and self._need_backend():
            self.change_resident(load=ref)

    @on(Button.Pressed, "#adapter-unload")
    def _unload_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        ref = self.query_one("#adapter-ref", TextField).value.strip() or self._selected_resident()
        if ref and self._need_backend():
            self.change_resident(unload=ref)

    @on(Button.Pressed, "#adapter-swap")
    def _swap_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        new, old = self._typed_ref(), self._selected_resident()
        if new and self._need_backend():
            if old is None:
                self.app.notify("Select the resident adapter to swap out.", severity="warning")
                return
            self.change_resident(load=new, unload=old)

    @work(thread=True, group="resident-change", exit_on_error=False)
    def change_resident(self, load: str | None = None, unload: str | None = None) -> None:
        """Load, unload, or hot-swap (load the new one first, so the runtime is never without
        either). The base stays resident throughout."""
        backend = self.backend
        try:
            if load:
                backend.load(load)
            if unload and unload != load:
                backend.unload(unload)
        finally:
            self.post_message(self.ResidentChanged(backend, backend.adapters()))
        done = f"swapped {unload} → {load}" if load and unload else f"loaded {load}" if load else f"unloaded {unload}"
        self.app.call_from_thread(self.app.notify, done)

    # ---- side by side -----------------------------------------------------------------------------
    @on(TextField.Submitted, "#compare-input, #compare-refs, #compare-max-tokens")
    def _input_submitted(self, event: TextField.Submitted) -> None:
        event.stop()
        self.action_send()

    @on(Button.Pressed, "#compare-send")
    def _send_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_send()

    def action_send(self) -> None:
        refs = split_refs(self.query_one("#compare-refs", TextField).value)
        text = self.query_one("#compare-input", TextField).value
        if not refs or not text.strip():
            self.app.notify("Type one or more refs and an input.", severity="warning")
            return
        if self._need_backend() is None:
            return
        try:
            max_tokens = max(1, int(self.query_one("#compare-max-tokens", TextField).value or "48"))
        except ValueError:
            max_tokens = 48
        self.send(refs, text, max_tokens)

    def send(self, refs: list[str], text: str, max_tokens: int = 48) -> list[ComparePane]:
        """One pane per ref, each fed by its own worker so answers arrive side by side."""
        box = self.query_one("#compare-panes", Horizontal)
        box.remove_children()
        panes = [ComparePane(ref) for ref in refs]
        box.mount_all(panes)
        self.query_one("#play-tabs", TabbedContent).active = "play-compare"
        for pane in panes:
            self.answer(pane, self.backend, text, max_tokens)
        return panes

    @work(thread=True, group="compare", exit_on_error=False)
    def answer(self, pane: ComparePane, backend, text: str, max_tokens: int) -> None:
        try:
            task = backend.task_of(pane.ref)
            pane.post_message(ComparePane.Task(task))
            started = time.perf_counter()
            if task == "classification":
                result = backend.classify(pane.ref, text)
                pane.post_message(ComparePane.Classified(result, time.perf_counter() - started))
            else:
                first, pieces = None, 0
                for piece in backend.stream(pane.ref, text, max_tokens):
                    if first is None:
                        first = time.perf_counter() - started
                    pieces += 1
                    pane.post_message(ComparePane.Piece(piece))
                pane.post_message(ComparePane.Generated(time.perf_counter() - started, first, pieces))
        except Exception as exc:
            pane.post_message(ComparePane.Failed(exc))
            raise
        finally:
            self.app.call_from_thread(self.refresh_resident)
