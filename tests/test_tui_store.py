"""The Store tab under Pilot on a real store: search, tag, untag, remove with confirmation,
export, verify, diff, retrain, errors with hints, help and the command palette."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from textual.command import CommandList, CommandPalette

from adapters_store import Store
from adapters_tui.modals import ConfirmModal, ErrorModal, HelpScreen
from adapters_tui.store_modals import DiffScreen, ExportModal, ProblemsModal, TagModal, UntagModal

from support.tui import REPO, build_demo_store, demo_app, pilot_test, shown_text, wait_until

SIZE = (120, 40)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "store"
    build_demo_store(root)
    return root


async def _loaded(pilot, rows: int = 4) -> None:
    """Wait for the store to be read and the adapters table to have the focus, as after start."""
    app = pilot.app
    await wait_until(pilot, lambda: len(app.store.rows) == rows and app.focused is not None
                     and app.focused.id == "adapters-table", what="the store to load")


async def _search(pilot, text: str) -> None:
    """Type a search the way a user does: "/", the text, Enter (focus goes back to the table)."""
    await pilot.press("slash")
    await wait_until(pilot, lambda: pilot.app.focused.id == "store-search", what="the search field")
    await pilot.press(*text, "enter")
    await pilot.pause()


def test_import_does_not_load_torch():
    code = "import sys, adapters_tui.app; sys.exit(1 if 'torch' in sys.modules else 0)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode == 0


@pilot_test
async def test_search_filters_and_details(root):
    app = demo_app(root)
    async with app.run_test(size=SIZE) as pilot:
        store = app.store
        await _loaded(pilot)
        await _search(pilot, "prefix")
        assert [r.name for r in store.rows] == ["rt-minilm-prefix"]
        assert store.selected.ref == "rt-minilm-prefix@1"
        await _search(pilot, "")
        store.query_one("#store-search").value = ""
        await pilot.pause()
        assert len(store.rows) == 4
        store.query_one("#filter-method").value = "lora"
        await pilot.pause()
        assert [r.name for r in store.rows] == ["chat-smollm2-lora", "rt-merged", "rt-minilm-lora"]
        store.query_one("#filter-task").value = "causal-lm"
        await pilot.pause()
        assert [r.name for r in store.rows] == ["chat-smollm2-lora"]
        store.select_ref("rt-merged@1")  # clears search and filters, shows the merge recipe
        await wait_until(pilot, lambda: store.selected and store.selected.ref == "rt-merged@1")
        lineage = shown_text(store.query_one("#details-lineage-body"))
        assert "rt-minilm-lora@2" in lineage and "0.7" in lineage and "ties" in lineage


@pilot_test
async def test_tag_untag_and_invalid_alias(root):
    app = demo_app(root)
    async with app.run_test(size=SIZE) as pilot:
        store = app.store
        await _loaded(pilot)
        await _search(pilot, "prefix")
        await pilot.press("t")
        assert isinstance(app.screen, TagModal)
        await pilot.press(*"canary", "enter")
        await wait_until(pilot, lambda: "canary" in store.selected.aliases, what="the new alias")
        with Store(root) as s:
            assert s.resolve("rt-minilm-prefix@canary").ref == "rt-minilm-prefix@1"

        await pilot.press("t", *"123", "enter")  # all digits: the store refuses, with a hint
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal), what="the error modal")
        assert "all digits" in app.screen.message and "prod" in app.screen.hint
        await pilot.press("escape")

        await pilot.press("u")
        assert isinstance(app.screen, UntagModal)
        app.screen.query_one("#untag-alias").value = "canary"
        await pilot.click("#dialog-ok")
        await wait_until(pilot, lambda: "canary" not in store.selected.aliases, what="the alias to go")
        assert store.selected.aliases == ["staging"]


@pilot_test
async def test_remove_asks_first(root):
    app = demo_app(root)
    async with app.run_test(size=SIZE) as pilot:
        store = app.store
        await _loaded(pilot)
        store.select_ref("rt-minilm-lora@2")
        await wait_until(pilot, lambda: store.selected and store.selected.ref == "rt-minilm-lora@2")
        await pilot.press("delete")
        assert isinstance(app.screen, ConfirmModal)
        assert "prod" in app.screen.detail  # it says the alias goes too
        await pilot.press("enter")  # focus starts on Cancel: Enter keeps the version
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        with Store(root) as s:
            assert s.resolve("rt-minilm-lora@2")

        await pilot.press("delete")
        await pilot.click("#confirm-yes")
        await wait_until(pilot, lambda: store.selected and store.selected.ref == "rt-minilm-lora@1",
                         what="the table to drop the version")
        with Store(root) as s:
            assert [v.ref for v in s.list(name="rt-minilm-lora")] == ["rt-minilm-lora@1"]
        row = next(r for r in store.rows if r.name == "rt-minilm-lora")
        assert row.total_versions == 1


@pilot_test
async def test_export_verify_and_diff(root, tmp_path):
    app = demo_app(root)
    async with app.run_test(size=SIZE) as pilot:
        store = app.store
        await _loaded(pilot)
        store.select_ref("rt-minilm-lora@2")
        await wait_until(pilot, lambda: store.selected and store.selected.ref == "rt-minilm-lora@2")

        await pilot.press("e")
        assert isinstance(app.screen, ExportModal)
        dest = tmp_path / "exported"
        app.screen.query_one("#export-dest").value = str(dest)
        await pilot.press("enter")
        await wait_until(pilot, lambda: (dest / "adapter_config.json").is_file(), what="the export")

        await pilot.press("d")
        assert isinstance(app.screen, DiffScreen)
        table = app.screen.query_one("#diff-table")
        await wait_until(pilot, lambda: table.row_count > 0, what="the diff")
        keys = {str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        assert "test.f1_macro" in keys
        assert [str(c.label) for c in table.columns.values()][2:] == ["rt-minilm-lora@1", "rt-minilm-lora@2"]
        await pilot.press("escape")

        damaged = store.selected.path / "adapter_model.safetensors"
        damaged.chmod(0o644)
        damaged.write_bytes(b"not the stored bytes")
        await pilot.press("v")
        await wait_until(pilot, lambda: isinstance(app.screen, ProblemsModal), what="verify's problems")
        assert any(p.kind == "corrupt" for p in app.screen.problems)


@pilot_test
async def test_help_palette_and_retrain(root):
    app = demo_app(root)
    async with app.run_test(size=SIZE) as pilot:
        store = app.store
        await _loaded(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-table")
        described = {str(table.get_row_at(i)[2]) for i in range(table.row_count)}
        assert {"Tag", "Remove", "Launch", "Cancel run", "Send"} <= described
        await pilot.press("escape")

        await pilot.press("ctrl+p")
        await pilot.press(*"go to train")
        assert isinstance(app.screen, CommandPalette)
        hits = app.screen.query_one(CommandList)
        await wait_until(pilot, lambda: hits.option_count > 0, what="palette hits")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "train", what="the Train tab")

        await pilot.press("1")
        store.select_ref("rt-minilm-lora@2")
        await wait_until(pilot, lambda: store.selected and store.selected.ref == "rt-minilm-lora@2")
        await pilot.press("n")
        form = app.train.query_one("#config-form")
        await wait_until(pilot, lambda: form.retrain_ref == "rt-minilm-lora@2", what="the retrain form")
        assert app.query_one("#tabs").active == "train"
        assert form.values()["name"] == "rt-minilm-lora"
        assert form.values()["training.learning_rate"] == 0.001
