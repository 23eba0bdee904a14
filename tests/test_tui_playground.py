"""The Playground tab under Pilot: an in-process Engine over stored tiny-BERT classifiers (load,
hot-swap, unload, one text to two adapters and their ensemble side by side), generation streaming into a pane from a
tiny Llama, and the same over HTTP against a real ``adapters serve`` app on 127.0.0.1. Also the
Store tab's merge dialog, which needs real stored adapters like these."""

from __future__ import annotations

import pytest
from textual.widgets import ProgressBar

from adapters_tui.compare import ComparePane
from adapters_tui.modals import ErrorModal

from support.server import API_KEY, serve_in_thread, train_into_store
from support.tui import demo_app, pilot_test, shown_text, wait_until

SIZE = (140, 40)
TEXT = "a gripping, beautifully acted film"


@pytest.fixture(scope="module")
def bert_store(tmp_path_factory, tiny_bert, sentiment_csv):
    """A store of its own with a LoRA and a prefix sentiment classifier on tiny BERT (the refs
    returned), and a second LoRA (tui-lora-b@1) to merge with the first."""
    root = tmp_path_factory.mktemp("tui-play") / "store"
    refs = [train_into_store(root, "tui-lora", tiny_bert, sentiment_csv, 1),
            train_into_store(root, "tui-prefix", tiny_bert, sentiment_csv, 2, method="prefix",
                             prefix={"num_virtual_tokens": 4})]
    train_into_store(root, "tui-lora-b", tiny_bert, sentiment_csv, 3)
    return root, refs


def _resident(play) -> list[str]:
    return [r.ref for r in play.resident]


async def _compare(pilot, refs: list[str], text: str) -> list[ComparePane]:
    """Type refs and an input on the Compare tab and press Enter; wait for every pane to finish."""
    play = pilot.app.playground
    play.query_one("#play-tabs").active = "play-compare"
    await pilot.pause()
    play.query_one("#compare-refs").value = ", ".join(refs)
    field = play.query_one("#compare-input")
    field.value = text
    field.focus()
    await pilot.press("enter")
    await wait_until(pilot, lambda: len(play.query(ComparePane)) == len(refs), what="the panes")
    panes = list(play.query(ComparePane))
    await wait_until(pilot, lambda: all("·" in str(p.query_one(".pane-status").content) and
                                        "running" not in str(p.query_one(".pane-status").content)
                                        for p in panes), timeout=120, what="every answer")
    return panes


async def _runtime_tab(pilot) -> None:
    """Back to the Runtime tab the way a user goes: a click on its tab."""
    await pilot.click("#--content-tab-play-runtime")
    stop = pilot.app.playground.query_one("#runtime-stop")
    await wait_until(pilot, lambda: stop.region.width > 0, what="the Runtime tab")


def _same_as_direct(panes: list[ComparePane], expected: list[dict]) -> None:
    for pane, want in zip(panes, expected):
        assert pane.result["label"] == want["label"]
        for label, p in want["probabilities"].items():
            assert pane.result["probabilities"][label] == pytest.approx(p, abs=1e-5)
        assert "latency" in str(pane.query_one(".pane-status").content)
        assert len(pane.query(ProgressBar)) == len(want["probabilities"])


@pilot_test
async def test_engine_load_swap_unload_and_side_by_side(bert_store, tiny_bert):
    root, refs = bert_store
    app = demo_app(root, initial_tab="playground")
    async with app.run_test(size=SIZE) as pilot:
        play = app.playground
        play.query_one("#engine-quant").value = "none"
        play.query_one("#engine-device").value = "cpu"
        base = play.query_one("#engine-base")
        base.value = str(tiny_bert)
        base.focus()
        await pilot.press("enter")  # Enter in the field starts the engine, as the button does
        await wait_until(pilot, lambda: play.backend is not None, timeout=120, what="the engine")
        assert "engine" in str(play.query_one("#runtime-status").content)

        ref_field = play.query_one("#adapter-ref")
        ref_field.value = refs[0]
        ref_field.focus()
        await pilot.press("enter")  # and Enter in the ref field loads it
        await wait_until(pilot, lambda: _resident(play) == [refs[0]], what="the load")
        assert play.resident[0].state == "READY" and play.resident[0].bytes > 0

        play.query_one("#adapter-ref").value = refs[1]  # hot-swap the selected row for refs[1]
        await pilot.click("#adapter-swap")
        await wait_until(pilot, lambda: _resident(play) == [refs[1]], what="the swap")

        play.query_one("#adapter-ref").value = ""  # unload the selected row
        await pilot.click("#adapter-unload")
        await wait_until(pilot, lambda: _resident(play) == [], what="the unload")

        panes = await _compare(pilot, refs, TEXT)
        _same_as_direct(panes, play.backend.engine.classify([TEXT, TEXT], adapters=refs))
        assert sorted(_resident(play)) == sorted(refs)  # sending loaded both

        # An ensemble ref is one more pane: the mean of its members' probabilities.
        panes = await _compare(pilot, [f"ensemble:{refs[0]}+{refs[1]}", *refs], TEXT)
        members = [pane.result["probabilities"] for pane in panes[1:]]
        for label, p in panes[0].result["probabilities"].items():
            assert p == pytest.approx(sum(m[label] for m in members) / 2, abs=1e-5)

        await _runtime_tab(pilot)
        await pilot.click("#runtime-stop")
        await wait_until(pilot, lambda: play.backend is None and _resident(play) == [], what="the stop")


@pilot_test
async def test_generation_streams_into_a_pane(tiny_llama, _isolated_home):
    app = demo_app(_isolated_home, initial_tab="playground")
    async with app.run_test(size=SIZE) as pilot:
        play = app.playground
        play.start_engine(str(tiny_llama), quant="none", device="cpu")
        await wait_until(pilot, lambda: play.backend is not None, timeout=120, what="the engine")
        play.query_one("#compare-max-tokens").value = "12"
        (pane,) = await _compare(pilot, ["__base__"], "hello, how are you today?")
        expected = play.backend.engine.generate(["hello, how are you today?"], max_new_tokens=12)[0]
        assert pane.text == expected.text
        status = str(pane.query_one(".pane-status").content)
        assert "total" in status and "pieces" in status


@pilot_test
async def test_connects_to_adapters_serve(bert_store, tiny_bert):
    from adapters.runtime import Engine
    from adapters.server import create_app, store_resolver

    root, refs = bert_store
    engine = Engine(str(tiny_bert), quant="none", device="cpu", resolver=store_resolver(root))
    port, stop = serve_in_thread(create_app(engine, api_key=API_KEY, store_root=root, served_name="tiny-bert"))
    try:
        app = demo_app(root, initial_tab="playground")
        async with app.run_test(size=SIZE) as pilot:
            play = app.playground
            play.query_one("#server-url").value = f"http://127.0.0.1:{port}"
            play.query_one("#server-key").value = "wrong-key"
            await pilot.click("#server-connect")
            await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal), what="the 401 error")
            assert "401" in app.screen.message and "API key" in app.screen.hint
            await pilot.press("escape")

            play.query_one("#server-key").value = API_KEY
            await pilot.click("#server-connect")
            await wait_until(pilot, lambda: play.backend is not None and play.backend.kind == "server"
                             and play.backend.client.headers.get("authorization") == f"Bearer {API_KEY}",
                             what="the connection")
            play.query_one("#adapter-ref").value = refs[0]
            await pilot.click("#adapter-load")
            await wait_until(pilot, lambda: _resident(play) == [refs[0]], what="the load over HTTP")
            assert play.resident[0].version == refs[0]

            panes = await _compare(pilot, refs, TEXT)
            _same_as_direct(panes, engine.classify([TEXT, TEXT], adapters=refs))

            await _runtime_tab(pilot)
            play.query_one("#adapter-ref").value = refs[1]
            await pilot.click("#adapter-unload")
            await wait_until(pilot, lambda: _resident(play) == [refs[0]], what="the unload over HTTP")
    finally:
        stop()


@pilot_test
async def test_merge_from_the_store_tab(bert_store):
    from textual.widgets import SelectionList

    from adapters_store import Store
    from adapters_tui.merge_modal import MergeModal

    root, refs = bert_store
    app = demo_app(root)
    async with app.run_test(size=SIZE) as pilot:
        store = app.store
        await wait_until(pilot, lambda: len(store.rows) >= 3, what="the store to load")
        store.select_ref(refs[0])
        await wait_until(pilot, lambda: store.selected and store.selected.ref == refs[0])
        await pilot.press("m")
        assert isinstance(app.screen, MergeModal)
        dialog = app.screen
        await wait_until(pilot, lambda: dialog.query("#dialog-ok"), what="the dialog's buttons")
        await pilot.click("#dialog-ok")  # one version only: the dialog says so and stays open
        assert "at least two" in str(dialog.query_one("#merge-problem").content)
        dialog.query_one(SelectionList).select("tui-lora-b@1")
        dialog.query_one("#merge-weights").value = "0.7, 0.3"
        dialog.query_one("#merge-method").value = "ties"
        dialog.query_one("#merge-density").value = "0.6"
        dialog.query_one("#merge-name").value = "tui-merged"
        ok = dialog.query_one("#dialog-ok")
        # A button ignores presses while it still shows the last one; keys, not a click, since
        # the density row has just moved it.
        await wait_until(pilot, lambda: not ok.has_class("-active"), what="the button to settle")
        ok.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: store.selected and store.selected.ref == "tui-merged@1", timeout=120,
                         what="the merged version")
        lineage = shown_text(store.query_one("#details-lineage-body"))
        assert "ties" in lineage and "tui-lora@1  weight 0.7" in lineage and "tui-lora-b@1  weight 0.3" in lineage
    with Store(root) as s:
        merge = s.resolve("tui-merged@1").lineage["merge"]
    assert [p["ref"] for p in merge["parents"]] == ["tui-lora@1", "tui-lora-b@1"]
    assert merge["method"] == "ties" and merge["density"] == 0.6
