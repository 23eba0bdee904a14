"""Training lands in the store; loading goes through it and refuses the wrong base or bad bytes."""

import json
import os

import pytest
import torch

import adapters
from adapters.cli.main import main
from adapters.errors import BaseMismatchError
from adapters_store import IntegrityError, Store

from support.config import tiny_config


def test_train_stores_a_version_and_load_resolves_refs(tiny_bert, sentiment_csv, capsys):
    first = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="sent"))
    second = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="sent"))
    assert (first.ref, second.ref) == ("sent@1", "sent@2")
    store = Store()
    version = store.resolve("sent")
    assert version.number == 2 and version.lineage["task"]["labels"] == ["fresh", "rotten"]
    assert version.metrics["test"]["accuracy"] == second.metrics["test"]["accuracy"]
    store.tag("sent@1", "prod")
    loaded = adapters.load(None, "sent@prod")
    assert loaded.adapter_dir == store.resolve("sent@1").path
    assert loaded.predict(["a fine film"])[0]["label"] in ("fresh", "rotten")
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {row["ref"] for row in listed} >= {"sent@1", "sent@2"}


def test_cli_train_prints_the_ref(tiny_bert, sentiment_csv, tmp_path, capsys):
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_bert, sentiment_csv, name="cli-sent")))
    assert main(["train", str(path), "-q", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ref"] == "cli-sent@1" and out["digest"].startswith("sha256:")


def _parent_copies(version) -> tuple:
    """The parent as each record of a version says it: the SQLite row, the lineage the store
    returns, the manifest beside the files, and the adapter's own lineage file."""
    manifest = json.loads((version.path / "manifest.json").read_text())
    own = json.loads((version.path / "adapter_manager.json").read_text())
    return (version.parent, version.lineage["parent"], manifest["parent"], manifest["lineage"]["parent"],
            own["parent"])


def test_init_from_a_ref_records_the_parent(tiny_bert, sentiment_csv):
    adapters.train(tiny_config(tiny_bert, sentiment_csv, name="parent"))
    Store().tag("parent@1", "prod")
    child = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="child", init_from="parent@prod"))
    version = Store().resolve(child.ref)
    # Every copy names the canonical ref, not the alias given nor the parent's folder.
    assert set(_parent_copies(version)) == {"parent@1"}


def test_init_from_a_directory_records_its_absolute_path_everywhere(tiny_bert, sentiment_csv, tmp_path,
                                                                      monkeypatch):
    parent = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="outside"), store=False,
                            output=tmp_path / "outside")
    monkeypatch.chdir(tmp_path)
    child = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="child", init_from="outside"))
    version = Store().resolve(child.ref)
    assert set(_parent_copies(version)) == {str(parent.output_dir.resolve())}


def test_load_refuses_an_adapter_of_another_base(tiny_bert, sentiment_csv, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    result = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="fp"))
    torch.manual_seed(123)
    other = tmp_path / "other-bert"
    BertModel(BertConfig.from_pretrained(tiny_bert)).save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(other)
    with pytest.raises(BaseMismatchError) as err:
        adapters.load(str(other), result.ref)
    assert str(tiny_bert) in err.value.message and str(other) in err.value.message


def test_load_refuses_a_corrupted_blob_naming_the_file(tiny_bert, sentiment_csv):
    result = adapters.train(tiny_config(tiny_bert, sentiment_csv, name="flip"))
    weights = Store().resolve(result.ref).path / "adapter_model.safetensors"
    blob = os.path.realpath(weights)
    os.chmod(blob, 0o644)
    data = bytearray(open(blob, "rb").read())
    data[-1] ^= 0xFF
    open(blob, "wb").write(bytes(data))
    with pytest.raises(IntegrityError) as err:
        adapters.load(None, result.ref)
    assert "adapter_model.safetensors" in str(err.value)
