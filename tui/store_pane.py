"""The Store screen: adapters with search and filters, their versions, a details pane, and the
actions on the selected version (tag, untag, remove, export, verify, diff, retrain) and merges.

The dialogs are imported when first opened: the Store is the first screen, and every module
loaded before its first frame delays it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Select, Static

from adapters.evaluation.metrics import headline_text
from adapters_store import Version
from adapters_tui.catalog import AdapterRow, Filters, choices, group, read_versions
from adapters_tui.formatting import age, human_size
from adapters_tui.modals import ConfirmModal
from adapters_tui.store_details import VersionDetails
from adapters_tui.widgets import Deferred, FitTable, ReportsWorkerErrors, TextField, fill_table

if TYPE_CHECKING:
    from adapters_tui.merge_modal import MergeRequest

ANY = "__any__"
DETAIL_KEYS = Binding.Group("Details")
ADAPTER_COLUMNS = ["name", "versions", "aliases", "base", "method", "task", "headline metric", "created"]
VERSION_COLUMNS = ["version", "aliases", "content id", "metric", "size", "created"]
# Which columns stay when a table is too narrow for all (lower stays longer).
ADAPTER_PRIORITY = [0, 7, 2, 3, 5, 6, 1, 4]
VERSION_PRIORITY = [0, 2, 4, 1, 5, 3]


class StorePane(ReportsWorkerErrors, Vertical):
    # The footer has room for the frequent keys at 100 columns; the help screen (?) lists all.
    BINDINGS = [
        Binding("slash", "search", "Search", key_display="/"),
        Binding("t", "tag", "Tag"),
        Binding("u", "untag", "Untag", show=False),
        Binding("delete,x", "remove", "Remove"),
        Binding("e", "export", "Export", show=False),
        Binding("v", "verify", "Verify", show=False),
        Binding("d", "diff", "Diff"),
        Binding("n", "retrain", "Retrain"),
        Binding("m", "merge", "Merge", show=False),
        Binding("f5", "reload", "Reload", show=False),
        Binding("l", "details('lineage')", "Lineage", group=DETAIL_KEYS),
        Binding("c", "details('config')", "Config", group=DETAIL_KEYS),
        Binding("s", "details('metrics')", "Metrics", group=DETAIL_KEYS),
        Binding("f", "details('files')", "Files", group=DETAIL_KEYS),
    ]

    class Loaded(Message):
        def __init__(self, versions: list[Version], select: str | None):
            super().__init__()
            self.versions, self.select = versions, select

    class Retrain(Message):
        """Start the Train form from a stored version's config."""

        def __init__(self, version: Version):
            super().__init__()
            self.version = version

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.versions: list[Version] = []
        self.rows: list[AdapterRow] = []
        self.filters = Filters()
        self.selected: Version | None = None
        self.shown_adapter: str | None = None  # whose versions the versions table lists

    def compose(self) -> ComposeResult:
        with Horizontal(id="store-filters"):
            yield TextField(placeholder="/ search name, alias, base, digest", id="store-search")
            yield Select([], prompt="method", id="filter-method", compact=True)
            yield Select([], prompt="task", id="filter-task", compact=True)
            yield Select([], prompt="base", id="filter-base", compact=True)
        with Horizontal(id="store-body"):
            with Vertical(id="store-lists"):
                yield Static(id="store-empty")
                yield FitTable(id="adapters-table", cursor_type="row", zebra_stripes=True)
                yield FitTable(id="versions-table", cursor_type="row", zebra_stripes=True)
            # The details pane (four tabs of scrolling text) mounts just after the first frame,
            # showing whatever version is selected by then.
            yield Deferred(lambda: VersionDetails(self.selected, id="store-details"))

    def on_mount(self) -> None:
        if not self.app.is_running:  # mounted (deferred) while the app shuts down: no children
            return
        self.query_one("#adapters-table", DataTable).border_title = "adapters"
        self.query_one("#versions-table", DataTable).border_title = "versions"
        fill_table(self.query_one("#adapters-table", DataTable), ADAPTER_COLUMNS, [])
        fill_table(self.query_one("#versions-table", DataTable), VERSION_COLUMNS, [])
        self.reload()

    def _show_first_steps(self, empty: bool) -> None:
        """An empty store says how to get a first adapter into it."""
        guide = self.query_one("#store-empty", Static)
        guide.display = empty
        if empty:
            guide.update(Text.assemble(
                ("The store is empty. ", "bold"), f"({self.app.store_root})\n\nTrain a first adapter: press ",
                ("2", "bold"), " for the Train tab and pick a config, or run\n\n",
                ("    adapters train configs/rt-minilm-lora.yaml", "bold"),
                "\n\nfrom the adapter-manager repository. An existing PEFT adapter directory comes in with ",
                ("adapters import DIR --name NAME", "bold"), "."))

    def on_fit_table_resized(self, message: FitTable.Resized) -> None:
        # The tables choose their columns by the width they have.
        self.refresh_tables(self.selected.ref if self.selected else None)

    # ---- loading and filtering ---------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="store-load", exit_on_error=False)
    def reload(self, select: str | None = None) -> None:
        """Read the store (a worker thread) and show it, then select ``select`` (a ref) if given."""
        self.post_message(self.Loaded(read_versions(self.app.store_root), select))

    def on_store_pane_loaded(self, message: Loaded) -> None:
        self.versions = message.versions
        self._show_first_steps(not self.versions)
        for attribute in ("method", "task", "base"):
            widget = self.query_one(f"#filter-{attribute}", Select)
            current = widget.value
            values = choices(self.versions, attribute)
            with widget.prevent(Select.Changed):
                widget.set_options([(f"any {attribute}", ANY)] + [(v, v) for v in values])
                widget.value = current if current in values else ANY
        target = message.select or (self.selected.ref if self.selected else None)
        self.refresh_tables(target)

    def refresh_tables(self, select_ref: str | None = None) -> None:
        self.rows = group(self.versions, self.filters)
        table = self.query_one("#adapters-table", DataTable)
        now = self.app.clock()
        select_name = select_ref.split("@")[0] if select_ref else None
        fill_table(table, ADAPTER_COLUMNS, [
            ([Text(row.name, style="bold"), str(row.total_versions), Text(row.aliases), Text(row.latest.base or ""),
              row.latest.method or "", row.latest.task or "", headline_text(row.latest.metrics),
              age(row.latest.created, now)], row.name) for row in self.rows], priority=ADAPTER_PRIORITY)
        names = [r.name for r in self.rows]
        if select_name in names:
            table.move_cursor(row=names.index(select_name))
        self.show_versions(select_ref)

    def current_row(self) -> AdapterRow | None:
        table = self.query_one("#adapters-table", DataTable)
        if not self.rows or table.cursor_row is None or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def show_versions(self, select_ref: str | None = None) -> None:
        row = self.current_row()
        table = self.query_one("#versions-table", DataTable)
        now = self.app.clock()
        newest_first = list(reversed(row.versions)) if row else []
        self.shown_adapter = row.name if row else None
        fill_table(table, VERSION_COLUMNS, [
            ([Text(v.ref, style="bold"), Text(", ".join(v.aliases)), v.short_digest[7:], headline_text(v.metrics),
              human_size(v.size_bytes), age(v.created, now)], v.ref) for v in newest_first], priority=VERSION_PRIORITY)
        refs = [v.ref for v in newest_first]
        if select_ref in refs:
            table.move_cursor(row=refs.index(select_ref))
        self.select_version(newest_first[table.cursor_row] if newest_first else None)

    def select_version(self, version: Version | None) -> None:
        self.selected = version
        for pane in self.query(VersionDetails):
            pane.show(version)

    @on(DataTable.RowHighlighted, "#adapters-table")
    def _adapter_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # Refilling the table highlights a row too: only another adapter changes the versions.
        row = self.current_row()
        if row is None or row.name != self.shown_adapter:
            self.show_versions()

    @on(DataTable.RowHighlighted, "#versions-table")
    def _version_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self.current_row()
        if row is not None and event.cursor_row < len(row.versions):
            self.select_version(list(reversed(row.versions))[event.cursor_row])

    @on(TextField.Changed, "#store-search")
    def _search_changed(self, event: TextField.Changed) -> None:
        if event.value == self.filters.text:
            return
        self.filters.text = event.value
        self.refresh_tables(self.selected.ref if self.selected else None)

    @on(TextField.Submitted, "#store-search")
    def _search_submitted(self, event: TextField.Submitted) -> None:
        self.query_one("#adapters-table", DataTable).focus()

    @on(Select.Changed)
    def _filter_changed(self, event: Select.Changed) -> None:
        attribute = (event.select.id or "").removeprefix("filter-")
        if attribute in ("method", "task", "base"):
            value = event.value if isinstance(event.value, str) and event.value != ANY else None
            if getattr(self.filters, attribute) == value:
                return  # new options with the same choice (after a reload): nothing to redo
            setattr(self.filters, attribute, value)
            self.refresh_tables(self.selected.ref if self.selected else None)

    def select_ref(self, ref: str) -> None:
        """Show ``ref`` (re-reading the store first, so a version stored a moment ago is there)."""
        search = self.query_one("#store-search", TextField)
        with search.prevent(TextField.Changed):
            search.value = ""
        for attribute in ("method", "task", "base"):
            widget = self.query_one(f"#filter-{attribute}", Select)
            if widget.value != ANY and widget.value is not Select.NULL:
                with widget.prevent(Select.Changed):
                    widget.value = ANY
        self.filters = Filters()
        self.reload(select=ref)
        self.query_one("#adapters-table", DataTable).focus()

    # ---- actions ----------------------------------------------------------------------------------
    def _need_version(self) -> Version | None:
        if self.selected is None:
            self.app.notify("Select a version first.", severity="warning")
        return self.selected

    def focus_main(self) -> None:
        self.query_one("#adapters-table", DataTable).focus()

    def action_details(self, name: str) -> None:
        """Show one tab of the details pane (the focus stays on the lists)."""
        for tabs in self.query("#details-tabs"):  # none until the pane has mounted
            tabs.active = f"details-{name}"

    def action_search(self) -> None:
        self.query_one("#store-search", TextField).focus()

    def action_reload(self) -> None:
        self.reload()

    def action_tag(self) -> None:
        from adapters_tui.store_modals import TagModal

        version = self._need_version()
        if version is not None:
            self.app.push_screen(TagModal(version), lambda alias: alias and self.change_alias(version.ref, alias, True))

    def action_untag(self) -> None:
        from adapters_tui.store_modals import UntagModal

        version = self._need_version()
        if version is None:
            return
        if not version.aliases:
            self.app.notify(f"{version.ref} has no aliases.", severity="warning")
            return
        self.app.push_screen(UntagModal(version), lambda alias: alias and self.change_alias(version.ref, alias, False))

    @work(thread=True, exit_on_error=False, group="store-write")
    def change_alias(self, ref: str, alias: str, add: bool) -> None:
        from adapters_store import Store

        with Store(self.app.store_root) as s:
            v = s.tag(ref, alias) if add else s.untag(ref, alias)
        self.app.call_from_thread(self.app.notify, f"{v.name}@{alias} → {v.ref}" if add
                                  else f"removed alias {alias} from {v.ref}")
        self.app.call_from_thread(self.reload, ref)

    def action_remove(self) -> None:
        version = self._need_version()
        if version is None:
            return
        detail = "Its number is never reused; `adapters gc` frees the space later."
        if version.aliases:
            detail = f"It carries the alias(es) {', '.join(version.aliases)}; they are removed with it. " + detail
        self.app.push_screen(ConfirmModal(f"Remove {version.ref}?", detail, confirm="Remove", danger=True),
                             lambda yes: yes and self.remove(version))

    @work(thread=True, exit_on_error=False, group="store-write")
    def remove(self, version: Version) -> None:
        from adapters_store import Store

        with Store(self.app.store_root) as s:
            s.remove(version.ref, force=bool(version.aliases))
        self.app.call_from_thread(self.app.notify, f"removed {version.ref}")
        self.app.call_from_thread(self.reload)

    def action_export(self) -> None:
        from adapters_tui.store_modals import ExportModal

        version = self._need_version()
        if version is not None:
            self.app.push_screen(ExportModal(version, Path.cwd()), lambda dest: dest and self.export(version, dest))

    @work(thread=True, exit_on_error=False, group="store-write")
    def export(self, version: Version, dest: Path) -> None:
        from adapters_store import Store

        with Store(self.app.store_root) as s:
            out = s.export(version.ref, dest)
        self.app.call_from_thread(self.app.notify, f"exported {version.ref} to {out}")

    def action_verify(self) -> None:
        version = self._need_version()
        if version is not None:
            self.verify(version.ref)

    @work(thread=True, exit_on_error=False, group="store-verify")
    def verify(self, ref: str | None) -> None:
        """Re-hash one version's files (``ref``) or the whole store (None)."""
        from adapters_store import Store

        with Store(self.app.store_root) as s:
            problems = s.verify(ref)
        subject = ref or "the store"
        if problems:
            from adapters_tui.store_modals import ProblemsModal

            self.app.call_from_thread(self.app.push_screen, ProblemsModal(subject, problems))
        else:
            self.app.call_from_thread(self.app.notify, f"verified {subject}: no problems")

    def action_diff(self) -> None:
        from adapters_tui.store_modals import DiffScreen

        version = self._need_version()
        if version is None:
            return
        refs = [v.ref for v in self.versions]
        siblings = [v for v in self.versions if v.name == version.name and v.number != version.number]
        older = [v for v in siblings if v.number < version.number]
        other = (older[-1] if older else siblings[0] if siblings else None)
        if other is None:
            other = next((v for v in self.versions if v.ref != version.ref), None)
        if other is None:
            self.app.notify("The store has only one version: nothing to compare.", severity="warning")
            return
        self.app.push_screen(DiffScreen(self.app.store_root, refs, other.ref, version.ref))

    def action_retrain(self) -> None:
        version = self._need_version()
        if version is not None:
            self.post_message(self.Retrain(version))

    def action_merge(self) -> None:
        from adapters_tui.merge_modal import MergeModal

        if len(self.versions) < 2:
            self.app.notify("A merge needs at least two stored versions.", severity="warning")
            return
        self.app.push_screen(MergeModal(self.versions, self.selected), lambda req: req and self.merge(req))

    @work(thread=True, exit_on_error=False, group="store-write")
    def merge(self, request: MergeRequest) -> None:
        """Merge in a worker: it loads torch and the parents' weights."""
        from adapters.api import merge

        self.app.call_from_thread(self.app.notify, f"merging {', '.join(request.refs)} ({request.method})…")
        result = merge(request.refs, weights=request.weights, method=request.method, density=request.density,
                       name=request.name, store=self.app.store_root)
        self.app.call_from_thread(self.app.notify, f"merged into {result.ref}")
        self.app.call_from_thread(self.select_ref, result.ref)
