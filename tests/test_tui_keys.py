"""Reaching everything by keyboard under Pilot, at the smallest supported size (100×30): a key for
every tab and sub-tab, shown in the footer and the help screen; Escape leaves a field so those
keys act again, while text fields keep the digits and letters typed into them."""

from __future__ import annotations

from textual.widgets import Footer, TabbedContent

from adapters_tui.modals import HelpScreen

from support.tui import demo_app, pilot_test, wait_until

SMALL = (100, 30)


async def _started(pilot) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: app.focused is not None and app.focused.id == "adapters-table" and all(
        app.query(selector) for selector in ("#details-tabs", "#run-view", "#compare-panes")), what="the app")
    await pilot.pause()


def _active(app, tabs_id: str) -> str:
    return str(app.query_one(f"#{tabs_id}", TabbedContent).active)


def _footer_keys(app) -> dict[str, int]:
    """The keys the footer shows, each with the column where it ends (to see it fits)."""
    return {item.key: item.region.right for item in app.query_one(Footer).query("FooterKey")}


@pilot_test
async def test_every_tab_and_sub_tab_has_a_key_in_the_footer_and_help():
    app = demo_app()
    async with app.run_test(size=SMALL) as pilot:
        await _started(pilot)
        width = SMALL[0]
        shown = _footer_keys(app)
        assert {"1", "2", "3", "question_mark", "l", "c", "s", "f"} <= set(shown)
        assert all(0 < right <= width for right in shown.values()), shown  # none cut off at 100 columns

        for key, sub_tab in (("c", "details-config"), ("s", "details-metrics"), ("f", "details-files"),
                             ("l", "details-lineage")):
            await pilot.press(key)
            assert _active(app, "details-tabs") == sub_tab
            assert app.focused.id == "adapters-table"  # the lists keep the focus

        await pilot.press("2")
        await wait_until(pilot, lambda: app.focused is app.query_one("#config-list"), what="the Train tab's focus")
        shown = _footer_keys(app)
        assert {"1", "2", "3", "question_mark", "f", "r", "c"} <= set(shown)
        assert all(0 < right <= width for right in shown.values()), shown
        await pilot.press("r")
        assert _active(app, "train-tabs") == "train-runs" and app.focused.id == "runs-table"
        await pilot.press("f")
        assert _active(app, "train-tabs") == "train-launch" and app.focused.id == "config-list"

        await pilot.press("3")
        await wait_until(pilot, lambda: app.focused is app.query_one("#resident-table"), what="the Playground")
        shown = _footer_keys(app)
        assert {"1", "2", "3", "question_mark", "r", "c"} <= set(shown)
        assert all(0 < right <= width for right in shown.values()), shown
        await pilot.press("c")
        assert _active(app, "play-tabs") == "play-compare" and app.focused.id == "compare-input"
        await pilot.press("escape", "r")
        assert _active(app, "play-tabs") == "play-runtime" and app.focused.id == "resident-table"

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-table")
        rows = [(str(table.get_row_at(i)[1]), str(table.get_row_at(i)[2])) for i in range(table.row_count)]
        for key, does in (("1", "Tabs: Store"), ("3", "Tabs: Playground"), ("l", "Details: Lineage"),
                          ("s", "Details: Metrics"), ("r", "Runs"), ("f", "Form"), ("c", "Compare"),
                          ("r", "Runtime"), ("m", "Merge")):
            assert (key, does) in rows, (key, does)


@pilot_test
async def test_escape_leaves_a_field_and_the_tab_keys_act_again():
    app = demo_app()
    async with app.run_test(size=SMALL) as pilot:
        await _started(pilot)
        tabs = app.query_one("#tabs", TabbedContent)

        await pilot.press("slash", "1", "question_mark")  # typed into the search, not keys
        search = app.query_one("#store-search")
        assert app.focused is search and search.value == "1?" and tabs.active == "store"
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.focused.id == "adapters-table"
        await pilot.press("2")
        assert tabs.active == "train"

        form = app.train.query_one("#config-form")
        await wait_until(pilot, lambda: app.focused is app.query_one("#config-list"), what="the config list")
        await pilot.press("enter")
        await wait_until(pilot, lambda: form.resolved is not None, what="the form")
        field = app.query_one("#field-lora-r")
        field.focus()
        await pilot.press("end", "3")
        assert field.value.endswith("3") and tabs.active == "train"
        await pilot.press("escape")
        assert app.focused.id == "config-list"
        await pilot.press("r")  # the Runs tab: Escape comes back to its table there
        app.query_one("#cancel-run").focus()
        await pilot.press("escape")
        assert app.focused.id == "runs-table"

        await pilot.press("3")
        await wait_until(pilot, lambda: app.focused is app.query_one("#resident-table"), what="the Playground")
        app.query_one("#engine-base").focus()
        await pilot.press("2")
        assert app.query_one("#engine-base").value == "2" and tabs.active == "playground"
        await pilot.press("escape")
        assert app.focused.id == "resident-table"
        await pilot.press("1")
        assert tabs.active == "store"


@pilot_test
async def test_enter_in_a_playground_field_does_what_its_button_does():
    app = demo_app(initial_tab="playground")
    async with app.run_test(size=SMALL) as pilot:
        play = app.playground
        await wait_until(pilot, lambda: app.focused is not None, what="the Playground")
        status = play.query_one("#runtime-status")

        play.query_one("#server-url").focus()
        await pilot.press(*"http://127.0.0.1:9", "enter")  # nothing listens on port 9
        await wait_until(pilot, lambda: "127.0.0.1:9" in str(status.content), what="Enter to connect")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ErrorModal", timeout=60,
                         what="the connection error")
        await pilot.press("escape")

        play.query_one("#engine-base").focus()
        await pilot.press(*"no-such-base", "enter")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ErrorModal"
                         and "no-such-base" in app.screen.message, timeout=120, what="Enter to start the engine")
        await pilot.press("escape")
        assert "did not start" in str(status.content)
