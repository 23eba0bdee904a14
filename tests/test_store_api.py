"""The store's Python API on a real SQLite index and real files in a tmp dir."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters_store import (
    AliasInUse,
    AmbiguousRef,
    DestinationExists,
    IntegrityError,
    InvalidAdapterDir,
    InvalidMetadata,
    InvalidName,
    PickleRefused,
    RefNotFound,
    Store,
    StoreError,
    StoreVersionError,
    Version,
    epoch_seconds,
)
from adapters_store.files import content_digest
from adapters_store.schema import SCHEMA_VERSION
from adapters_store.testing import make_adapter_dir, write_safetensors

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def adapter(tmp_path: Path, tag: str, **kw) -> Path:
    payload = kw.pop("payload", hashlib.sha256(tag.encode()).digest() * 4)
    return make_adapter_dir(tmp_path / "src" / tag, payload=payload, **kw)


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def blob_files(s: Store) -> set[str]:
    return {p.name for p in s.blobs.glob("*/*")}


# ---------------------------------------------------------------------------- layout


def test_layout_after_puts_tags_removes_and_gc(store: Store, tmp_path: Path):
    a = adapter(tmp_path, "a")
    b = adapter(tmp_path, "b", r=16)  # other config, other weights
    v1 = store.put(a, "sent", lineage={"base": {"id": "tiny-bert"}}, metrics={"acc": 0.5})
    v2 = store.put(b, "sent", metrics={"acc": 0.7}, parent="sent@1", run_id="run-1")
    v3 = store.put(a, "other")  # same content as sent@1: blobs shared
    store.tag("sent@2", "prod")

    root = store.root
    assert {p.name for p in root.iterdir()} >= {"store.db", "blobs", "versions", "tmp", ".lock"}
    # tmp/ holds only this live process's staging dir, and that only its lock
    (staging,) = store.tmp.iterdir()
    assert staging.name.startswith(f"w-{os.getpid()}-") and tree(staging) == {".lock"}
    for v in (v1, v2, v3):
        assert v.path == root / "versions" / v.name / str(v.number)
        assert {p.name for p in v.path.iterdir()} == {"adapter_config.json",
                                                       "adapter_model.safetensors",
                                                       "manifest.json"}
        manifest = json.loads((v.path / "manifest.json").read_text())
        assert manifest["digest"] == v.digest and manifest["number"] == v.number
        for rel, info in v.files.items():
            f = v.path / rel
            blob = root / "blobs" / "sha256" / info["sha256"][:2] / info["sha256"]
            assert blob.exists()
            assert f.stat().st_ino == blob.stat().st_ino  # hard link, not a copy
            assert stat.S_IMODE(blob.stat().st_mode) == 0o444
            assert hashlib.sha256(f.read_bytes()).hexdigest() == info["sha256"]
            assert f.stat().st_size == info["size"]
    # dedup: sent@1 and other@1 share both blobs; sent@2 differs in both files
    assert v1.digest == v3.digest and v1.digest != v2.digest
    assert len(blob_files(store)) == 4
    assert v2.parent == "sent@1" and v2.run_id == "run-1"

    # the index agrees with the disk: WAL, current schema, one row per version dir
    db = sqlite3.connect(root / "store.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    rows = db.execute("SELECT name, number, base FROM versions ORDER BY id").fetchall()
    assert rows == [("sent", 1, "tiny-bert"), ("sent", 2, "tiny-base"), ("other", 1, "tiny-base")]
    db.close()

    with pytest.raises(AliasInUse):
        store.remove("sent@2")
    store.remove("sent@2", force=True)
    assert not v2.path.exists()
    assert len(blob_files(store)) == 4  # blobs stay until gc
    plan = store.gc(dry_run=True)
    v2_blobs = {i["sha256"] for i in v2.files.values()}
    assert {p.name for p in plan.files} == v2_blobs
    assert plan.bytes == v2.size_bytes
    assert len(blob_files(store)) == 4  # dry run removes nothing
    done = store.gc(dry_run=False)
    assert {p.name for p in done.files} == v2_blobs
    assert blob_files(store) == {i["sha256"] for i in v1.files.values()}
    assert store.gc().files == []

    # numbers are never reused, even for the removed latest
    v4 = store.put(b, "sent")
    assert v4.number == 3
    store.remove("other@1")
    assert not (root / "versions" / "other").exists()
    assert store.put(a, "other").number == 2
    assert store.verify() == []
    assert tree(staging) == {".lock"}
    store.close()
    assert list(root.joinpath("tmp").iterdir()) == []
    assert tree(root / "versions") == {
        "sent", "sent/1", "sent/3", "other", "other/2",
        *{f"{d}/{f}" for d in ("sent/1", "sent/3", "other/2")
          for f in ("adapter_config.json", "adapter_model.safetensors", "manifest.json")}}


def test_version_object(store: Store, tmp_path: Path):
    v = store.put(adapter(tmp_path, "a", task_type="CAUSAL_LM", peft_type="PREFIX_TUNING"), "gen",
                  metrics={"loss": 1.25})
    assert isinstance(v, Version)
    assert v.ref == "gen@1"
    assert v.digest == content_digest(v.files) and v.digest.startswith("sha256:")
    assert len(v.digest) == len("sha256:") + 64
    assert v.size_bytes == sum(f["size"] for f in v.files.values()) > 0
    assert v.created.endswith("Z")
    # inferred from adapter_config.json
    assert v.lineage["base"] == {"id": "tiny-base"}
    assert v.lineage["method"]["kind"] == "prefix" and v.lineage["task"]["kind"] == "causal-lm"
    assert (v.base, v.method, v.task) == ("tiny-base", "prefix", "causal-lm")
    d = v.to_dict()
    assert json.loads(json.dumps(d))["ref"] == "gen@1"
    assert d["metrics"] == {"loss": 1.25} and d["path"] == str(v.path)
    assert store.resolve("gen") == v
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.number = 2


def test_created_reads_back_as_epoch_seconds(store: Store, tmp_path: Path):
    """``created`` is ISO 8601 in UTC; ``epoch_seconds`` is its one reader (the TUI's ages, the
    server's model cards)."""
    before = time.time()
    v = store.put(adapter(tmp_path, "a"), "t")
    assert before - 1 <= epoch_seconds(v.created) <= time.time() + 1
    assert epoch_seconds("2024-05-01T12:30:00.000Z") == epoch_seconds("2024-05-01T12:30:00") == 1714566600.0
    assert epoch_seconds(12.5) == 12.5
    assert epoch_seconds(None) is None and epoch_seconds("") is None and epoch_seconds("yesterday") is None


def test_lineage_given_wins_and_is_indexed(store: Store, tmp_path: Path):
    lineage = {"base": {"id": "minilm", "revision": "abc", "fingerprint": "f" * 16},
               "method": {"kind": "lora", "config": {"r": 8}}, "task": {"kind": "ner"},
               "training": {"lr": 1e-3, "epochs": 2}}
    store.put(adapter(tmp_path, "a"), "x", lineage=lineage)
    store.put(adapter(tmp_path, "b"), "y")
    assert [v.ref for v in store.list(base="minilm")] == ["x@1"]
    assert [v.ref for v in store.list(task="ner")] == ["x@1"]
    assert [v.ref for v in store.list(method="lora")] == ["x@1", "y@1"]
    assert store.resolve("x").lineage == lineage


def test_list_filters(store: Store, tmp_path: Path):
    for i in range(3):
        store.put(adapter(tmp_path, f"a{i}"), "alpha")
    store.put(adapter(tmp_path, "b", base="other-base", task_type="TOKEN_CLS"), "beta")
    store.tag("alpha@2", "prod")
    store.tag("beta@1", "prod")
    assert [v.ref for v in store.list()] == ["alpha@1", "alpha@2", "alpha@3", "beta@1"]
    assert [v.ref for v in store.list(name="alpha")] == ["alpha@1", "alpha@2", "alpha@3"]
    assert [v.ref for v in store.list(alias="prod")] == ["alpha@2", "beta@1"]
    assert [v.ref for v in store.list(alias="latest")] == ["alpha@3", "beta@1"]
    assert [v.ref for v in store.list(base="other-base")] == ["beta@1"]
    assert [v.ref for v in store.list(task="token-classification", alias="prod")] == ["beta@1"]
    assert store.list(name="alpha", base="other-base") == []
    assert store.list(name="nothing") == []
    assert store.resolve("alpha@2").aliases == ["prod"]
    assert store.latest_numbers() == {"alpha": 3, "beta": 1}


# ---------------------------------------------------------------------------- refs


def test_refs_all_four_forms(store: Store, tmp_path: Path):
    v1 = store.put(adapter(tmp_path, "a"), "sent")
    v2 = store.put(adapter(tmp_path, "b"), "sent")
    store.tag("sent@1", "prod")
    assert store.resolve("sent").ref == "sent@2"
    assert store.resolve("sent@latest").ref == "sent@2"
    assert store.resolve("sent@1").ref == "sent@1"
    assert store.resolve("sent@prod").ref == "sent@1"
    assert store.resolve(v1.digest).ref == "sent@1"
    assert store.resolve(v2.digest[:15]).ref == "sent@2"  # 8 hex digits
    assert store.resolve(v2.digest.upper().replace("SHA256", "sha256")[:20]).ref == "sent@2"
    assert store.path("sent@prod") == v1.path
    # tag moves an alias
    store.tag("sent@2", "prod")
    assert store.resolve("sent@prod").ref == "sent@2"
    assert store.resolve("sent@1").aliases == []


def test_identical_content_resolves_to_newest(store: Store, tmp_path: Path):
    a = adapter(tmp_path, "a")
    store.put(a, "one")
    v = store.put(a, "two")
    assert store.resolve(v.digest[:16]).ref == "two@1"


def _colliding_payloads(config: bytes) -> tuple[bytes, bytes]:
    """Two weights payloads whose version digests share the first 8 hex digits (birthday search)."""
    import tempfile

    from adapters_store.testing import write_safetensors as ws

    cfg_sha = hashlib.sha256(config).hexdigest()
    seen: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "w.safetensors"
        ws(base, {"base_model.model.lora_A.weight": b"\x00" * 8,
                  "base_model.model.lora_B.weight": b"\x00" * 8}, metadata={"format": "pt"})
        template = base.read_bytes()[:-16]
    for i in range(2_000_000):
        payload = i.to_bytes(16, "little")
        wsha = hashlib.sha256(template + payload).hexdigest()
        digest = content_digest({"adapter_config.json": {"sha256": cfg_sha},
                                 "adapter_model.safetensors": {"sha256": wsha}})
        key = digest[7:15]
        if key in seen:
            return seen[key], payload
        seen[key] = payload
    raise AssertionError("no collision found")


def test_ambiguous_digest_prefix(store: Store, tmp_path: Path):
    a = adapter(tmp_path, "a", payload=b"\x00" * 16)
    config = (a / "adapter_config.json").read_bytes()
    p1, p2 = _colliding_payloads(config)
    v1 = store.put(adapter(tmp_path, "c1", payload=p1), "amb")
    v2 = store.put(adapter(tmp_path, "c2", payload=p2), "amb")
    assert v1.digest != v2.digest and v1.digest[:15] == v2.digest[:15]
    with pytest.raises(AmbiguousRef) as err:
        store.resolve(v1.digest[:15])
    assert isinstance(err.value, ValueError) and "more hex digits" in err.value.hint
    # one more digit is enough
    n = next(i for i in range(15, 71) if v1.digest[:i] != v2.digest[:i])
    assert store.resolve(v1.digest[:n]).ref == "amb@1"
    assert store.resolve(v2.digest[:n]).ref == "amb@2"


@pytest.mark.parametrize("ref", ["ghost", "sent@9", "sent@staging", "sha256:" + "0" * 12])
def test_unknown_refs(store: Store, tmp_path: Path, ref: str):
    store.put(adapter(tmp_path, "a"), "sent")
    with pytest.raises(RefNotFound) as err:
        store.resolve(ref)
    e = err.value
    assert isinstance(e, KeyError) and isinstance(e, StoreError) and e.exit_code == 2
    assert e.hint
    assert str(e).startswith(e.message) and not str(e).startswith("'")  # no KeyError quoting


@pytest.mark.parametrize("ref", ["", "bad name", "-x", "a..b", "x@", "x@a/b", "sha256:abc",
                                 "sha256:zzzzzzzzzz", "x" * 101, "../etc"])
def test_bad_refs(store: Store, ref: str):
    with pytest.raises(InvalidName) as err:
        store.resolve(ref)
    assert isinstance(err.value, ValueError) and err.value.hint


@pytest.mark.parametrize("name", ["", "a b", ".hidden", "a/b", "a..b", "é", "x" * 101, "x@1"])
def test_bad_names_refused_by_put(store: Store, tmp_path: Path, name: str):
    with pytest.raises(InvalidName):
        store.put(adapter(tmp_path, "a"), name)
    assert store.list() == []


@pytest.mark.parametrize("alias", ["123", "latest", "a b", "", "-x"])
def test_bad_aliases(store: Store, tmp_path: Path, alias: str):
    store.put(adapter(tmp_path, "a"), "sent")
    with pytest.raises(InvalidName):
        store.tag("sent@1", alias)


def test_untag(store: Store, tmp_path: Path):
    store.put(adapter(tmp_path, "a"), "sent")
    store.put(adapter(tmp_path, "b"), "sent")
    store.tag("sent@1", "prod")
    with pytest.raises(RefNotFound):
        store.untag("sent@2", "prod")  # prod is on sent@1
    with pytest.raises(RefNotFound):
        store.untag("sent", "staging")
    assert store.untag("sent", "prod").ref == "sent@1"
    with pytest.raises(RefNotFound):
        store.resolve("sent@prod")
    store.tag("sent@2", "prod")
    store.untag("sent@2", "prod")
    store.remove("sent@1")  # no aliases left: no force needed


# ---------------------------------------------------------------------------- sources


def test_refuses_dirs_that_are_not_peft(store: Store, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidAdapterDir, match="adapter_config.json and adapter_model"):
        store.put(empty, "x")
    with pytest.raises(InvalidAdapterDir, match="not a directory"):
        store.put(tmp_path / "missing", "x")
    broken = adapter(tmp_path, "broken")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-5])  # truncated
    with pytest.raises(InvalidAdapterDir, match="not a valid safetensors"):
        store.put(broken, "x")
    bad_cfg = adapter(tmp_path, "cfg")
    (bad_cfg / "adapter_config.json").write_text("{not json")
    with pytest.raises(InvalidAdapterDir, match="JSON"):
        store.import_dir(bad_cfg, "x")
    foreign = adapter(tmp_path, "foreign", extra_files={"manifest.json": b"{}"})
    with pytest.raises(InvalidAdapterDir, match="reserved"):
        store.put(foreign, "x")
    with pytest.raises(InvalidMetadata):
        store.put(adapter(tmp_path, "ok"), "x", metrics={"f": object()})
    assert store.list() == [] and store.gc().files == []


@pytest.mark.parametrize("pickled", ["adapter_model.bin", "extra/optimizer.pt", "w.pth",
                                     "state.pkl", "last.ckpt"])
def test_pickled_weights_refused(store: Store, tmp_path: Path, pickled: str):
    src = adapter(tmp_path, "p", extra_files={pickled: b"\x80\x04K\x01."})
    for call in (lambda: store.put(src, "x"), lambda: store.import_dir(src, "x")):
        with pytest.raises(PickleRefused) as err:
            call()
        assert isinstance(err.value, InvalidAdapterDir) and isinstance(err.value, ValueError)
        assert "pickled weights are refused" in err.value.message
        assert pickled in err.value.message
        assert "--allow-pickle" in err.value.hint
    assert store.list() == []


def test_nested_files_hidden_skipped_and_symlinked_files_followed(store: Store, tmp_path: Path):
    src = adapter(tmp_path, "n", extra_files={"sub/adapter_model.safetensors": b"",
                                              ".git/HEAD": b"ref", ".DS_Store": b"x",
                                              "README.md": b"# hi"})
    write_safetensors(src / "sub" / "adapter_model.safetensors", {"w": b"1234"})
    outside = tmp_path / "outside.txt"
    outside.write_text("tokenizer")
    (src / "tokenizer.txt").symlink_to(outside)
    v = store.put(src, "nested")
    assert set(v.files) == {"adapter_config.json", "adapter_model.safetensors", "README.md",
                            "sub/adapter_model.safetensors", "tokenizer.txt"}
    assert (v.path / "tokenizer.txt").read_text() == "tokenizer"
    assert not (v.path / "tokenizer.txt").is_symlink()
    assert store.verify() == []


def test_import_export_roundtrip(store: Store, tmp_path: Path):
    np = pytest.importorskip("numpy")
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "peft"
    src.mkdir()
    (src / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2", "peft_type": "LORA",
        "task_type": "SEQ_CLS", "r": 4, "target_modules": ["query", "value"],
        "modules_to_save": ["classifier"]}))
    tensors = {"base_model.model.encoder.layer.0.attention.self.query.lora_A.weight":
               np.arange(4 * 384, dtype=np.float32).reshape(4, 384),
               "base_model.model.classifier.modules_to_save.weight":
               np.ones((2, 384), dtype=np.float32)}
    save_file(tensors, str(src / "adapter_model.safetensors"))
    v = store.import_dir(src, "minilm-sent", lineage={"data": {"fingerprint": "d" * 8}})
    assert v.base == "sentence-transformers/all-MiniLM-L6-v2"
    assert (v.method, v.task) == ("lora", "classification")
    assert v.lineage["method"]["config"]["r"] == 4 and v.lineage["data"]["fingerprint"] == "d" * 8

    out = store.export("minilm-sent", tmp_path / "out")
    for rel in v.files:
        assert (out / rel).read_bytes() == (src / rel).read_bytes()
        assert os.access(out / rel, os.W_OK)  # a plain, writable copy
        assert (out / rel).stat().st_ino != (v.path / rel).stat().st_ino
    loaded = load_file(str(out / "adapter_model.safetensors"))
    assert all((loaded[k] == tensors[k]).all() for k in tensors)
    with pytest.raises(DestinationExists):
        store.export("minilm-sent", out)
    (tmp_path / "empty").mkdir()
    store.export("minilm-sent", tmp_path / "empty")

    # re-import the export into another store: same content id, lineage carried by manifest.json
    other = Store(tmp_path / "other")
    w = other.import_dir(out, "again")
    assert w.digest == v.digest and w.lineage == v.lineage
    assert "manifest.json" not in w.files


# ---------------------------------------------------------------------------- integrity


def test_flipped_byte_is_found(store: Store, tmp_path: Path):
    v = store.put(adapter(tmp_path, "a"), "sent")
    other = store.put(adapter(tmp_path, "b"), "other")
    sha = v.files["adapter_model.safetensors"]["sha256"]
    blob = store.blobs / sha[:2] / sha
    assert store.check("sent") == v
    assert store.open_file("sent", "adapter_model.safetensors") == blob.read_bytes()
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))

    problems = store.verify()
    assert {p.kind for p in problems} == {"corrupt"}
    paths = {p.path for p in problems}
    assert blob in paths and v.path / "adapter_model.safetensors" in paths
    assert any("adapter_model.safetensors" in p.message and "sent@1" in p.message
               for p in problems)
    assert [p.kind for p in store.verify("sent@1")] == ["corrupt", "corrupt"]
    assert store.verify("other") == []
    with pytest.raises(IntegrityError, match="adapter_model.safetensors") as err:
        store.check("sent@1")
    assert err.value.hint and "verify" in err.value.hint
    with pytest.raises(IntegrityError):
        store.open_file("sent", "adapter_model.safetensors")
    assert store.check(other.ref) == other
    with pytest.raises(RefNotFound):
        store.open_file("sent", "nope.txt")


def test_missing_file_and_stray_dir_are_reported(store: Store, tmp_path: Path):
    v = store.put(adapter(tmp_path, "a"), "sent")
    os.unlink(v.path / "adapter_config.json")
    stray = store.versions_dir / "ghost" / "7"
    stray.mkdir(parents=True)
    (stray / "x").write_text("junk")
    problems = store.verify()
    kinds = {(p.kind, p.path) for p in problems}
    assert ("missing", v.path / "adapter_config.json") in kinds
    assert ("stray", stray) in kinds
    with pytest.raises(IntegrityError, match="adapter_config.json is missing"):
        store.check("sent")
    plan = store.gc(dry_run=False)
    assert stray in plan.files and not (store.versions_dir / "ghost").exists()


# ---------------------------------------------------------------------------- diff


def test_diff(store: Store, tmp_path: Path):
    store.put(adapter(tmp_path, "a", r=8), "sent", metrics={"acc": 0.8, "f1": 0.7},
              lineage={"training": {"lr": 1e-3, "epochs": 3}})
    store.put(adapter(tmp_path, "b", r=16), "sent", metrics={"acc": 0.9, "f1": 0.7, "loss": 0.1},
              lineage={"training": {"lr": 1e-3, "epochs": 5}})
    d = store.diff("sent@1", "sent@2")
    assert d["a"] == "sent@1" and d["b"] == "sent@2" and not d["same_content"]
    cfg = d["sections"]["config"]
    assert cfg["changed"] == {"r": [8, 16], "lora_alpha": [16, 32]}
    assert cfg["same"]["peft_type"] == "LORA"
    met = d["sections"]["metrics"]
    assert met["changed"] == {"acc": [0.8, 0.9]} and met["same"] == {"f1": 0.7}
    assert met["only_b"] == {"loss": 0.1} and met["only_a"] == {}
    lin = d["sections"]["lineage"]
    assert lin["changed"]["training.epochs"] == [3, 5] and lin["same"]["training.lr"] == 1e-3
    json.dumps(d)
    same = store.diff("sent@1", "sent@1")
    assert same["same_content"] and all(not s["changed"] for s in same["sections"].values())


# ---------------------------------------------------------------------------- open, tmp, schema


def test_open_clears_dead_debris_but_not_live_staging(tmp_path: Path):
    from filelock import FileLock  # another flock implementation must interoperate

    s = Store(tmp_path / "s")
    v = s.put(adapter(tmp_path, "a"), "sent")
    s.close()
    assert list(s.tmp.iterdir()) == []  # close() drops this process's staging dir
    # a writer killed after moving its version dir in, before committing its row
    dead = s.tmp / "w-1-dead"
    dead.mkdir()
    (dead / "blob-x").write_bytes(b"partial")
    ghost = s.versions_dir / "sent" / "2"
    ghost.mkdir()
    (ghost / "adapter_config.json").write_text("{}")
    (s.tmp / "stray-file").write_text("x")
    # a live writer's staging: its lock is held
    live = s.tmp / "w-2-live"
    live.mkdir()
    lock = FileLock(live / ".lock", timeout=0)
    lock.acquire()
    try:
        s2 = Store(tmp_path / "s")
        assert sorted(p.name for p in s2.tmp.iterdir()) == ["w-2-live"]
        assert not ghost.exists()
        assert v.path.exists() and s2.verify() == []
        s2.close()
    finally:
        lock.release()
    Store(tmp_path / "s").close()
    assert list(s.tmp.iterdir()) == []


def test_stray_dir_without_crash_evidence_is_left_to_gc(tmp_path: Path):
    s = Store(tmp_path / "s")
    s.put(adapter(tmp_path, "a"), "sent")
    s.close()
    ghost = s.versions_dir / "sent" / "5"
    ghost.mkdir()
    s = Store(tmp_path / "s")
    assert ghost.exists()  # opening does not scan versions/ unless a writer died
    assert [(p.kind, p.path) for p in s.verify()] == [("stray", ghost)]
    assert s.gc(dry_run=False).kinds == {str(ghost): "stray"}
    assert not ghost.exists() and s.verify() == []


def test_put_replaces_uncommitted_dir_of_its_number(tmp_path: Path):
    s = Store(tmp_path / "s")
    ghost = s.versions_dir / "sent" / "1"  # left by a writer that died before its commit
    ghost.mkdir(parents=True)
    (ghost / "junk").write_text("x")
    v = s.put(adapter(tmp_path, "a"), "sent")
    assert v.number == 1 and not (v.path / "junk").exists() and s.verify() == []


def test_newer_schema_is_refused(tmp_path: Path):
    Store(tmp_path / "s").close()
    db = sqlite3.connect(tmp_path / "s" / "store.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreVersionError) as err:
        Store(tmp_path / "s")
    assert "upgrade" in err.value.hint


def test_root_from_env_and_bad_root(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ADAPTERS_HOME", str(tmp_path / "home"))
    s = Store()
    assert s.root == tmp_path / "home" and (s.root / "store.db").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        Store(tmp_path / "file")


def test_threads_share_one_store(store: Store, tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    srcs = [adapter(tmp_path, f"t{i}") for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda p: store.put(p, "threads"), srcs))
    assert sorted(v.number for v in versions) == list(range(1, 25))
    assert store.verify() == []


def test_store_import_does_not_load_torch():
    code = ("import adapters_store, adapters_store.core, adapters_store.maintenance, adapters_store.testing, sys; "
            "assert 'torch' not in sys.modules, 'torch'; "
            "assert 'numpy' not in sys.modules, 'numpy'")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)


def test_listed_versions_behave_like_plain_ones(store: Store, tmp_path: Path):
    import copy
    import pickle

    made = store.put(adapter(tmp_path, "a"), "sent", metrics={"acc": 1.0},
                     lineage={"training": {"lr": 0.1}})
    (listed,) = store.list()
    assert listed == made and repr(listed) == repr(made)
    assert listed.path == made.path and listed.metrics == {"acc": 1.0}
    assert listed.lineage["training"] == {"lr": 0.1}
    for clone in (pickle.loads(pickle.dumps(store.list()[0])), copy.deepcopy(store.list()[0]),
                  dataclasses.replace(store.list()[0])):
        assert clone == made and clone.path == made.path
    with pytest.raises(AttributeError):
        _ = listed.nonexistent


def test_import_keeps_parent_by_content_not_by_name(tmp_path: Path):
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    pa = a.put(adapter(tmp_path, "p"), "base-task")
    child = a.put(adapter(tmp_path, "c"), "child", parent="base-task@1")
    assert child.parent == "base-task@1"
    # in store b, "base-task@1" is an unrelated adapter; the parent's content is stored as x@1
    b.put(adapter(tmp_path, "unrelated"), "base-task")
    b.put(adapter(tmp_path, "p"), "x")
    imported = b.import_dir(a.export("child", tmp_path / "exp"), "child")
    assert imported.parent == "x@1"
    # without the parent's content, the original ref is kept as an external reference
    c = Store(tmp_path / "c")
    assert c.import_dir(tmp_path / "exp", "child").parent == "base-task@1"
    assert pa.digest == b.resolve("x@1").digest
    # a parent outside any store (a hub id) is kept as given
    assert a.put(adapter(tmp_path, "d"), "d", parent="org/model").parent == "org/model"
