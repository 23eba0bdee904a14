"""The ``adapters tui`` application: Store, Train (with its Sweeps) and Playground tabs over one
adapter store.

Only Textual, the store and the first tab's modules load before the first frame; the other tabs
load just after it, and torch, transformers, pydantic and httpx load inside the workers that need
them, so the UI opens in about a second.

    from adapters_tui.app import AdaptersApp
    AdaptersApp(store_root="~/.local/share/adapters", configs_dir="configs").run()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Footer, Header, TabbedContent, TabPane

from adapters.training.runs import runs_dir
from adapters_store import default_root
from adapters_tui.modals import ConfirmModal, ErrorModal, HelpScreen, describe_error
from adapters_tui.widgets import Deferred

if TYPE_CHECKING:
    from adapters_tui.playground_pane import PlaygroundPane
    from adapters_tui.store_pane import StorePane
    from adapters_tui.sweep_view import SweepsView
    from adapters_tui.train_pane import TrainPane

# Absolute paths: Textual resolves relative ones against the module of the (sub)class in use.
STYLES = [Path(__file__).parent / name for name in
          ("app.tcss", "store.tcss", "train.tcss", "sweeps.tcss", "playground.tcss", "modals.tcss")]
TABS = ("store", "train", "playground")
FIRST_FOCUS = {"store": "#adapters-table", "train": "#config-list", "playground": "#resident-table"}
# The footer shows the tab keys as one item ("1 2 3 Tabs"); the help screen lists each.
TAB_KEYS = Binding.Group("Tabs")


def pane_class(tab: str) -> type[Widget]:
    """The pane class of a tab, imported on first use (only the first tab's before the first frame)."""
    if tab == "store":
        from adapters_tui.store_pane import StorePane

        return StorePane
    if tab == "train":
        from adapters_tui.train_pane import TrainPane

        return TrainPane
    from adapters_tui.playground_pane import PlaygroundPane

    return PlaygroundPane


# Palette commands on the panes: (title, help, tab, method, arguments).
PANE_COMMANDS = [
    ("Store: reload", "read the store again", "store", "action_reload", ()),
    ("Store: tag version", "point an alias at the selected version", "store", "action_tag", ()),
    ("Store: untag version", "remove an alias of the selected version", "store", "action_untag", ()),
    ("Store: remove version", "remove the selected version (asks first)", "store", "action_remove", ()),
    ("Store: export version", "copy the selected version as a PEFT directory", "store", "action_export", ()),
    ("Store: verify version", "re-hash the selected version's files", "store", "action_verify", ()),
    ("Store: verify whole store", "re-hash every file in the store", "store", "verify", (None,)),
    ("Store: diff versions", "compare two versions side by side", "store", "action_diff", ()),
    ("Store: retrain version", "open the selected version's config in Train", "store", "action_retrain", ()),
    ("Store: merge versions", "merge stored versions into a new adapter", "store", "action_merge", ()),
    ("Train: launch", "start training with the form's config", "train", "action_launch", ()),
    ("Train: cancel run", "interrupt the selected run", "train", "action_cancel", ()),
    ("Train: open run's version", "show the run's stored version", "train", "action_open_version", ()),
    ("Train: reload configs", "list the configs directory and the stored configs again", "train",
     "action_reload_configs", ()),
    ("Sweeps: start a sweep", "adapters sweep from a config and a space file", "train", "sweeps.action_new_sweep",
     ()),
    ("Sweeps: open best in store", "show the selected sweep's best version", "train", "sweeps.action_open_best", ()),
    ("Sweeps: cancel sweep", "interrupt the sweep started here", "train", "sweeps.action_cancel_sweep", ()),
    ("Playground: send", "send the input to every listed adapter", "playground", "action_send", ()),
    ("Playground: refresh resident adapters", "ask the runtime again", "playground", "action_refresh_resident", ()),
    ("Playground: stop runtime", "stop the engine or disconnect", "playground", "stop_backend", ()),
]


def adapter_commands():
    """The palette's provider, imported when the palette first opens (Textual accepts a callable)."""
    from adapters_tui.commands import AdapterCommands

    return AdapterCommands


def default_configs_dir() -> Path | None:
    """./configs when there is one, else the example configs installed with the package."""
    here = Path.cwd() / "configs"
    if here.is_dir():
        return here
    import importlib.util

    spec = importlib.util.find_spec("adapters_configs")  # data only: a namespace package
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if any(Path(folder).glob("*.yaml")):
            return Path(folder)
    return None


class AdaptersApp(App):
    """``clock`` (epoch seconds) and ``cursor_blink`` exist so tests can take stable screenshots;
    ``poll_interval`` is how often run logs are read (0: only on demand)."""

    TITLE = "adapters"
    CSS_PATH = STYLES
    COMMANDS = App.COMMANDS | {adapter_commands}
    BINDINGS = [
        Binding("1", "show_tab('store')", "Store", group=TAB_KEYS),
        Binding("2", "show_tab('train')", "Train", group=TAB_KEYS),
        Binding("3", "show_tab('playground')", "Playground", group=TAB_KEYS),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        # Reached only when nothing nearer the focus takes Escape (a dialog, an open list):
        # it leaves a field, so the single-letter keys act again.
        Binding("escape", "leave_field", "Leave the field", show=False),
    ]

    def __init__(self, store_root: str | Path | None = None, configs_dir: str | Path | None = None, *,
                 clock: Callable[[], float] = time.time, cursor_blink: bool = True, initial_tab: str = "store",
                 server_url: str | None = None, api_key: str | None = None, poll_interval: float = 0.5):
        super().__init__()
        self.store_root = Path(store_root).expanduser() if store_root else default_root()
        self.runs_dir = runs_dir(self.store_root)
        self.configs_dir = Path(configs_dir) if configs_dir else default_configs_dir()
        self.clock = clock
        self.cursor_blink = cursor_blink
        self.initial_tab = initial_tab if initial_tab in TABS else "store"
        # The screen focuses this when it starts (Textual's auto focus), ahead of anything else.
        self.AUTO_FOCUS = FIRST_FOCUS[self.initial_tab]
        self.server_url, self.api_key = server_url, api_key
        self.poll_interval = poll_interval

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◆")
        with TabbedContent(initial=self.initial_tab, id="tabs"):
            for tab in TABS:
                with TabPane(tab.capitalize(), id=tab):
                    # The hidden tabs (and their modules) load just after the first frame.
                    yield self.make_pane(tab) if tab == self.initial_tab else Deferred(partial(self.make_pane, tab))
        yield Footer(compact=True)

    def make_pane(self, tab: str) -> Widget:
        options = {"train": {"poll_interval": self.poll_interval},
                   "playground": {"server_url": self.server_url, "api_key": self.api_key}}.get(tab, {})
        return pane_class(tab)(id=f"{tab}-pane", **options)

    def on_mount(self) -> None:
        self.sub_title = f"store {self.store_root}"

    # ---- panes --------------------------------------------------------------------------------------
    @property
    def store(self) -> StorePane:
        return self.query_one("#store-pane")

    @property
    def train(self) -> TrainPane:
        return self.query_one("#train-pane")

    @property
    def playground(self) -> PlaygroundPane:
        return self.query_one("#playground-pane")

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        self._focus_tab(tab)

    def _focus_tab(self, tab: str, tries: int = 200) -> None:
        # After the switch has been drawn: a TabbedContent shows the pane that holds the focus,
        # so focusing first would switch straight back.
        self.call_after_refresh(self._focus_pane, tab, tries)

    def _focus_pane(self, tab: str, tries: int) -> None:
        if str(self.query_one("#tabs", TabbedContent).active) != tab:
            return  # the user has moved on
        panes = self.query(f"#{tab}-pane")
        if panes:
            panes.first().focus_main()
            if tries > 0:
                # A main widget not yet laid out (a busy machine) does not take the focus, which then
                # stays on the tab bar or a container: look again shortly.
                self.set_timer(0.05, lambda: self._refocus(tab, tries - 1))
        elif tries > 0:
            # A tab pressed within the first frames, or on a busy machine, may not have its pane
            # yet (it is Deferred): focus it once it is there, instead of leaving the tab bar focused.
            self.set_timer(0.05, lambda: self._focus_pane(tab, tries - 1))

    def _refocus(self, tab: str, tries: int) -> None:
        from textual.containers import VerticalScroll
        from textual.widgets._tabbed_content import ContentTabs

        if self.focused is None or isinstance(self.focused, (ContentTabs, VerticalScroll)):
            self._focus_pane(tab, tries)

    def show_sweeps(self) -> None:
        """The Train tab's Sweeps view."""
        for train in self.query("#train-pane"):
            train.query_one("#train-tabs", TabbedContent).active = "train-sweeps"
        self.action_show_tab("train")

    def action_leave_field(self) -> None:
        """Focus the active tab's main widget (a table or list), where the tab's keys act."""
        tab = str(self.query_one("#tabs", TabbedContent).active)
        for pane in self.query(f"#{tab}-pane")[:1]:
            pane.focus_main()

    # ---- messages between panes ---------------------------------------------------------------------
    def on_store_pane_retrain(self, message: StorePane.Retrain) -> None:
        self.action_show_tab("train")
        self.train.retrain(message.version)

    def on_sweeps_view_open_in_store(self, message: SweepsView.OpenInStore) -> None:
        self.action_show_tab("store")
        self.store.select_ref(message.ref)
        self.notify(message.note)

    def on_train_pane_version_ready(self, message: TrainPane.VersionReady) -> None:
        if message.jump:
            self.action_show_tab("store")
            self.store.select_ref(message.ref)
            self.notify(f"stored {message.ref}")
        else:
            self.store.reload()
            self.notify(f"stored {message.ref} (o opens it in the Store)", title="training finished")

    # ---- errors, help, palette, quit ----------------------------------------------------------------
    def show_error(self, error: BaseException) -> None:
        title, message, hint = describe_error(error)
        self.push_screen(ErrorModal(title, message, hint))

    def action_help(self) -> None:
        def keys(bindings) -> list[tuple[str, str]]:
            # Every key with a description, also those the footer leaves out for want of room.
            out = []
            for b in bindings:
                if isinstance(b, Binding) and b.description and b.action != "leave_field":
                    shown = " / ".join(self.get_key_display(replace(b, key=k)) for k in b.key.split(","))
                    described = f"{b.group.description}: {b.description}" if b.group else b.description
                    out.append((shown, described))
            return out

        sections = [("everywhere", keys(self.BINDINGS) + [("ctrl+p", "command palette"),
                                                        ("tab / shift+tab", "next / previous field"),
                                                        ("escape", "leave a field; close a dialog"),
                                                        ("enter", "in a field: what its button does")])]
        sections += [(tab, keys(pane_class(tab).BINDINGS)) for tab in TABS]
        from adapters_tui.sweep_view import SweepsView  # loaded with the Train tab

        sections.insert(TABS.index("train") + 2, ("train: sweeps", keys(SweepsView.BINDINGS)))
        notes = [f"Store: {self.store_root}", f"Runs: {self.runs_dir}",
                 f"Configs: {self.configs_dir or 'none (no ./configs here; the Train tab lists stored versions)'}",
                 "Refs: name, name@3, name@alias, sha256:<prefix>; the playground passes any ref through."]
        self.push_screen(HelpScreen(sections, notes))

    def palette_commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        def call(tab: str, method: str, args: tuple) -> Callable[[], object]:
            # Looked up when run: a tab's pane mounts only after the first frame. A dotted method
            # is one of a part of the pane (its sweeps view).
            return lambda: attrgetter(method)(self.query_one(f"#{tab}-pane"))(*args)

        def go(tab: str) -> Callable[[], object]:
            return lambda: self.action_show_tab(tab)

        return [
            ("Go to Store", "adapters, versions, lineage", go("store")),
            ("Go to Train", "configs and runs", go("train")),
            ("Go to Playground", "engine, server, side-by-side", go("playground")),
            ("Go to Sweeps", "sweeps, their trials and the objective plot (in Train)", self.show_sweeps),
            *[(title, help_text, call(tab, method, args)) for title, help_text, tab, method, args in PANE_COMMANDS],
            ("Help: keys", "every key binding", self.action_help),
        ]

    async def action_quit(self) -> None:
        trains = self.query("#train-pane")
        running = trains.first().running() if trains else []
        if not running:
            self.exit()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.train.cancel_all()
                self.exit()

        self.push_screen(ConfirmModal(f"{len(running)} training run(s) or sweep(s) still going.",
                                      "Quitting interrupts them (their logs say 'cancelled').",
                                      confirm="Quit", danger=True), answer)
