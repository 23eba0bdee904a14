"""A version's record comes from the lineage file its directory carries: the store derives lineage,
metrics, parent and run id from ``adapter_manager.json`` and refuses a record that contradicts it, so
the file, the manifest and the SQLite row cannot tell different stories (torch-free, like the store)."""

import json
from pathlib import Path

import pytest

from adapters_store import Store
from adapters_store.errors import InvalidAdapterDir
from adapters_store.testing import make_adapter_dir

LINEAGE = {"base": {"id": "tiny-base", "fingerprint": "sha256:" + "ab" * 32}, "quant": "4bit",
           "method": {"kind": "lora", "config": {"r": 8}}, "task": {"kind": "classification", "labels": ["a", "b"]},
           "metrics": {"dev": {"accuracy": 0.75}}, "parent": "root@1", "run_id": "run-7"}


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "store") as s:
        yield s


def _with_lineage(path: Path, lineage: dict) -> Path:
    make_adapter_dir(path)
    (path / "adapter_manager.json").write_text(json.dumps(lineage))
    return path


def test_put_records_what_the_lineage_file_says(store, tmp_path):
    store.put(make_adapter_dir(tmp_path / "root"), "root")
    v = store.put(_with_lineage(tmp_path / "child", LINEAGE), "child")
    manifest = json.loads((v.path / "manifest.json").read_text())
    for record in (v, store.resolve("child@1")):
        assert record.lineage == LINEAGE
        assert (record.metrics, record.parent, record.run_id) == (LINEAGE["metrics"], "root@1", "run-7")
    assert manifest["lineage"] == LINEAGE and manifest["parent"] == "root@1"
    assert json.loads((v.path / "adapter_manager.json").read_text()) == LINEAGE


def test_a_record_that_contradicts_the_file_is_refused_and_nothing_is_stored(store, tmp_path):
    src = _with_lineage(tmp_path / "a", LINEAGE)
    with pytest.raises(ValueError, match="its own lineage"):
        store.put(src, "a", lineage={**LINEAGE, "quant": "none"})
    with pytest.raises(ValueError, match="contradicts"):
        store.put(src, "a", parent="other@3")
    assert store.list() == []
    # The same lineage passed again (as older callers do) is accepted.
    assert store.put(src, "a", lineage=json.loads(json.dumps(LINEAGE))).lineage == LINEAGE


def test_a_damaged_lineage_file_is_refused_with_a_hint(store, tmp_path):
    src = make_adapter_dir(tmp_path / "a")
    (src / "adapter_manager.json").write_text("{not json")
    with pytest.raises(InvalidAdapterDir) as err:
        store.put(src, "a")
    assert "adapter_manager.json" in str(err.value) and err.value.hint
    assert store.list() == []


def test_a_plain_peft_directory_still_gets_its_lineage_from_adapter_config(store, tmp_path):
    v = store.put(make_adapter_dir(tmp_path / "plain", base="some/base", task_type="CAUSAL_LM"), "plain")
    assert v.lineage["base"] == {"id": "some/base"} and v.lineage["task"] == {"kind": "causal-lm"}
    assert v.parent is None and v.metrics == {}
