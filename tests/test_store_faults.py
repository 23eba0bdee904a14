"""Faults, races and hostile input on the store: damaged stored files, readers racing writers,
refs that overflow SQLite, mistyped store paths and repeated imports. CLI behaviour is checked
through a real ``python -m adapters`` subprocess on a real SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from adapters_store import IntegrityError, InvalidName, RefNotFound, Store, StoreError, parse_ref
from adapters_store import files as fs
from adapters_store.testing import make_adapter_dir

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1"}


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adapters", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, one error line and a hint, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "hint: " in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def adapter(tmp_path: Path, tag: str, **kw) -> Path:
    return make_adapter_dir(tmp_path / "src" / tag, payload=tag.encode() * 64, **kw)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def nothing_written(dest: Path) -> None:
    """No destination and no staging sibling left behind."""
    assert not dest.exists()
    siblings = dest.parent.iterdir() if dest.parent.exists() else []
    leftovers = [p.name for p in siblings if dest.name in p.name]
    assert leftovers == [], leftovers


def writable(path: Path) -> None:
    os.chmod(path, 0o644)


# ---------------------------------------------------------------------------- export integrity


def _flip_byte(path: Path) -> None:
    writable(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    writable(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _symlink_passwd(path: Path) -> None:
    path.unlink()
    path.symlink_to("/etc/passwd")


@pytest.mark.parametrize("damage", [_flip_byte, _truncate, _symlink_passwd],
                         ids=["flipped-byte", "truncated", "symlink"])
@pytest.mark.parametrize("fmt", ["peft", "vllm"])
def test_export_refuses_a_damaged_weights_file(store: Store, tmp_path: Path, damage, fmt):
    v = store.put(adapter(tmp_path, "a"), "sent")
    damage(v.path / fs.WEIGHTS_FILE)
    dest = tmp_path / "out" / "exp"
    proc = cli("export", "sent", str(dest), "--format", fmt, "--store", str(store.root))
    assert_clean_error(proc, "sent@1", fs.WEIGHTS_FILE, "adapters verify")
    nothing_written(dest)
    assert not dest.parent.exists()  # parents made for the export are removed again
    with pytest.raises(IntegrityError):
        store.export("sent", dest)
    nothing_written(dest)


@pytest.mark.parametrize("fmt", ["peft", "vllm"])
def test_export_refuses_a_symlinked_config(store: Store, tmp_path: Path, fmt):
    v = store.put(adapter(tmp_path, "a"), "sent")
    _symlink_passwd(v.path / fs.CONFIG_FILE)
    dest = tmp_path / "exp"
    proc = cli("export", "sent", str(dest), "--format", fmt, "--store", str(store.root))
    assert_clean_error(proc, "sent@1", fs.CONFIG_FILE)
    assert "JSONDecodeError" not in proc.stderr
    nothing_written(dest)


def test_export_refuses_a_damaged_blob_and_a_missing_manifest(store: Store, tmp_path: Path):
    v = store.put(adapter(tmp_path, "a"), "sent")
    w = store.put(adapter(tmp_path, "b"), "sent")
    # a copy (not a link) in the version dir, the blob damaged: export reads the blob
    rel = fs.WEIGHTS_FILE
    blob = fs.blob_path(store.blobs, v.files[rel]["sha256"])
    data = (v.path / rel).read_bytes()
    (v.path / rel).unlink()
    (v.path / rel).write_bytes(data)
    _flip_byte(blob)
    with pytest.raises(IntegrityError, match="adapters verify"):
        store.export(v.ref, tmp_path / "e1")
    nothing_written(tmp_path / "e1")
    # a version without its manifest is not exported without one
    os.unlink(w.path / fs.MANIFEST)
    with pytest.raises(IntegrityError, match="manifest"):
        store.export(w.ref, tmp_path / "e2")
    nothing_written(tmp_path / "e2")


def test_export_copies_from_checked_blobs_into_place(store: Store, tmp_path: Path):
    v = store.put(adapter(tmp_path, "a", extra_files={"sub/notes.txt": b"hello"}), "sent")
    (tmp_path / "empty").mkdir()
    for dest in (tmp_path / "new" / "dir", tmp_path / "empty"):
        out = store.export("sent", dest)
        assert out == dest
        assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) \
            == sorted([*v.files, fs.MANIFEST])
        for rel, info in v.files.items():
            assert fs.sha256_file(dest / rel)[0] == info["sha256"]
            assert os.access(dest / rel, os.W_OK)
        manifest = json.loads((dest / fs.MANIFEST).read_text())
        assert manifest["digest"] == v.digest
        assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []
    proc = cli("export", "sent", str(tmp_path / "v"), "--format", "vllm",
               "--store", str(store.root))
    assert proc.returncode == 0, proc.stderr
    assert "vllm serve tiny-base --enable-lora" in proc.stdout


def test_export_failing_midway_leaves_nothing_at_the_destination(store: Store, tmp_path: Path,
                                                                 monkeypatch):
    store.put(adapter(tmp_path, "a", extra_files={"z.txt": b"last"}), "sent")
    real = fs.copy_checked
    calls = []

    def fail_on_second(*args, **kw):
        calls.append(args)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(fs, "copy_checked", fail_on_second)
    dest = tmp_path / "exp"
    with pytest.raises(OSError, match="No space left") as err:
        store.export("sent", dest)
    assert isinstance(err.value, StoreError) and err.value.hint
    nothing_written(dest)


def test_export_to_an_unwritable_place_is_a_clean_error(store: Store, tmp_path: Path):
    store.put(adapter(tmp_path, "a"), "sent")
    (tmp_path / "a-file").write_text("not a directory")
    proc = cli("export", "sent", str(tmp_path / "a-file" / "exp"), "--store", str(store.root))
    assert_clean_error(proc, "cannot write the export")
    assert (tmp_path / "a-file").read_text() == "not a directory"


def test_export_into_a_non_empty_directory_is_refused(store: Store, tmp_path: Path):
    store.put(adapter(tmp_path, "a"), "sent")
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    proc = cli("export", "sent", str(dest), "--store", str(store.root))
    assert_clean_error(proc, "not an empty directory")
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------------------- readers racing writers


def _remove_after_resolve(monkeypatch, store: Store, other: Store, ref: str, gc: bool) -> None:
    """The reader resolves ``ref``; then another process removes it (and gc frees its blobs)."""
    real = Store.resolve
    done = []

    def resolve_then_remove(self, r):
        version = real(self, r)
        if self is store and not done:
            done.append(1)
            other.remove(ref, force=True)
            if gc:
                other.gc(dry_run=False)
        return version

    monkeypatch.setattr(Store, "resolve", resolve_then_remove)


@pytest.mark.parametrize("gc", [False, True], ids=["rm", "rm+gc"])
def test_export_racing_rm_is_refused_cleanly(store: Store, tmp_path: Path, monkeypatch, gc):
    store.put(adapter(tmp_path, "a"), "sent")
    other = Store(store.root)
    _remove_after_resolve(monkeypatch, store, other, "sent@1", gc)
    dest = tmp_path / "exp"
    with pytest.raises(RefNotFound, match="sent@1"):
        store.export("sent", dest)
    nothing_written(dest)


@pytest.mark.parametrize("gc", [False, True], ids=["rm", "rm+gc"])
def test_check_racing_rm_says_not_found_not_corrupt(store: Store, tmp_path: Path, monkeypatch,
                                                     gc):
    store.put(adapter(tmp_path, "a"), "sent")
    other = Store(store.root)
    _remove_after_resolve(monkeypatch, store, other, "sent@1", gc)
    with pytest.raises(RefNotFound, match="sent@1"):
        store.check("sent")


def test_open_file_racing_rm_and_gc_says_not_found(store: Store, tmp_path: Path, monkeypatch):
    store.put(adapter(tmp_path, "a"), "sent")
    other = Store(store.root)
    _remove_after_resolve(monkeypatch, store, other, "sent@1", gc=True)
    with pytest.raises(RefNotFound, match="sent@1"):
        store.open_file("sent", fs.CONFIG_FILE)


def test_verify_racing_rm_and_gc_reports_nothing(store: Store, tmp_path: Path, monkeypatch):
    for tag in "abc":
        store.put(adapter(tmp_path, tag), "sent")
    other = Store(store.root)
    real = Store.list

    def list_then_remove(self, *a, **kw):
        versions = real(self, *a, **kw)
        if self is store:
            other.remove("sent@2")
            other.gc(dry_run=False)
        return versions

    monkeypatch.setattr(Store, "list", list_then_remove)
    assert store.verify() == []


def test_verify_does_not_call_an_in_flight_version_dir_debris(tmp_path: Path):
    """A writer holds the store lock with its version dir moved in and its row not yet committed
    (the last step of a put); verify must not call that dir crash debris."""
    root = tmp_path / "store"
    with Store(root) as s:
        s.put(adapter(tmp_path, "a"), "sent")
    writer = subprocess.Popen(
        [sys.executable, "-c", _IN_FLIGHT_WRITER, str(root)], cwd=REPO, env=ENV,
        stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "in flight"
        proc = cli("verify", "--store", str(root))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "debris" not in proc.stdout
    finally:
        writer.wait(timeout=30)
        writer.stdout.close()


_IN_FLIGHT_WRITER = r"""
import shutil, sys, time
from pathlib import Path
from adapters_store.locks import ProcessLock
root = Path(sys.argv[1])
with ProcessLock(root / ".lock"):
    d = root / "versions" / "sent" / "2"
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    print("in flight", flush=True)
    time.sleep(1.5)
    shutil.rmtree(d)  # its commit failed: the writer takes its dir back under the lock
"""


def test_gc_waits_for_an_in_flight_put_that_reuses_a_blob(store: Store, tmp_path: Path,
                                                          monkeypatch):
    """The put ingests a blob that no committed version uses (its version was removed); a gc
    starting then must neither delete it under the put nor fail it."""
    src = adapter(tmp_path, "a")
    store.put(src, "sent")
    store.remove("sent@1")
    other = Store(store.root)
    real_ingest = fs.ingest
    gc_done = threading.Event()
    results: dict = {}

    def ingest_then_gc(*args, **kw):
        out = real_ingest(*args, **kw)
        if "gc" not in results:
            results["gc"] = None

            def run_gc():
                try:
                    results["gc"] = other.gc(dry_run=False)
                except Exception as exc:  # noqa: BLE001 - reported below
                    results["gc"] = exc
                gc_done.set()

            threading.Thread(target=run_gc, daemon=True).start()
            gc_done.wait(1.0)  # an unguarded gc finishes well within this
            results["blob kept"] = fs.blob_path(store.blobs, out[0]).exists()
        return out

    monkeypatch.setattr(fs, "ingest", ingest_then_gc)
    v = store.put(src, "sent")
    assert gc_done.wait(30)
    assert not isinstance(results["gc"], Exception), results["gc"]
    assert results["blob kept"]
    assert v.ref == "sent@2"
    assert store.verify() == []
    assert store.check("sent@2").ref == "sent@2"


def test_put_survives_gc_removing_the_blob_shard_it_writes_into(store: Store, tmp_path: Path,
                                                                monkeypatch):
    """A gc from an older process that ignores in-flight puts: the put re-creates what it lost
    instead of failing with a raw FileNotFoundError."""
    src = adapter(tmp_path, "a")
    real_replace = os.replace
    state = {"hit": 0}

    def replace(a, b, *args, **kw):
        shard = Path(b).parent
        if shard.parent == store.blobs and state["hit"] < 2:
            state["hit"] += 1
            shard.rmdir()  # what gc does to a shard it finds empty
        return real_replace(a, b, *args, **kw)

    monkeypatch.setattr(fs.os, "replace", replace)
    v = store.put(src, "sent")
    monkeypatch.undo()
    assert state["hit"] == 2
    assert store.verify() == []
    assert store.check(v.ref).digest == v.digest


# ---------------------------------------------------------------------------- hostile refs

HUGE = "99999999999999999999"


@pytest.mark.parametrize("ref", [f"x@{HUGE}", "x@9223372036854775808", "x@²", "x@٣"])
def test_parse_ref_refuses_version_numbers_sqlite_cannot_hold(ref: str):
    with pytest.raises(InvalidName) as err:
        parse_ref(ref)
    assert err.value.hint


def test_largest_int64_version_number_is_just_not_found(store: Store, tmp_path: Path):
    store.put(adapter(tmp_path, "a"), "x")
    with pytest.raises(RefNotFound):
        store.resolve("x@9223372036854775807")


@pytest.mark.parametrize("command", [
    ["show", f"x@{HUGE}"], ["rm", f"x@{HUGE}"], ["tag", f"x@{HUGE}", "prod"],
    ["path", f"x@{HUGE}"], ["export", f"x@{HUGE}", "OUT"], ["verify", f"x@{HUGE}"],
    ["untag", f"x@{HUGE}", "prod"], ["diff", "x@1", f"x@{HUGE}"],
])
def test_cli_refuses_an_overflowing_version_number(store: Store, tmp_path: Path, command):
    store.put(adapter(tmp_path, "a"), "x")
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    proc = cli(*args, "--store", str(store.root))
    assert_clean_error(proc, HUGE)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- missing stores

READ_COMMANDS = [["list"], ["show", "x"], ["path", "x"], ["verify"], ["verify", "x"],
                 ["export", "x", "OUT"], ["gc"], ["gc", "--dry-run"], ["diff", "x", "y"],
                 ["tag", "x", "prod"], ["untag", "x", "prod"], ["rm", "x"]]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: "-".join(c))
def test_commands_do_not_invent_a_store_at_a_mistyped_path(tmp_path: Path, command):
    typo = tmp_path / "stroe"
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    proc = cli(*args, "--store", str(typo))
    assert_clean_error(proc, str(typo), "no adapter store")
    assert not typo.exists()
    assert not (tmp_path / "out").exists()


def test_an_empty_directory_is_not_a_store_for_readers(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(cli("verify", "--store", str(empty)), "no adapter store")
    assert list(empty.iterdir()) == []
    # import creates a store there, after which readers see it
    proc = cli("import", str(adapter(tmp_path, "a")), "--name", "x", "--store", str(empty))
    assert proc.returncode == 0, proc.stderr
    assert cli("verify", "--store", str(empty)).returncode == 0


def test_store_api_can_refuse_to_create(tmp_path: Path):
    with pytest.raises(StoreError, match="no adapter store") as err:
        Store(tmp_path / "nope", create=False)
    assert err.value.exit_code == 2 and err.value.hint
    assert not (tmp_path / "nope").exists()
    Store(tmp_path / "yes").close()
    Store(tmp_path / "yes", create=False).close()


# ---------------------------------------------------------------------------- repeated import


def test_importing_identical_content_again_names_the_existing_version(tmp_path: Path):
    root = tmp_path / "store"
    src = adapter(tmp_path, "a")
    first = cli("import", str(src), "--name", "sent", "--store", str(root))
    assert first.returncode == 0 and "sent@1" in first.stdout, first.stderr
    again = cli("import", str(src), "--name", "sent", "--store", str(root))
    assert again.returncode == 0, again.stderr
    assert "already" in again.stdout and "sent@1" in again.stdout
    assert "--new-version" in again.stdout
    as_json = cli("import", str(src), "--name", "sent", "--json", "--store", str(root))
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["ref"] == "sent@1"
    with Store(root) as s:
        assert [v.ref for v in s.list()] == ["sent@1"]
    # another name, or asking for it, makes a new version
    assert cli("import", str(src), "--name", "other", "--store", str(root)).returncode == 0
    forced = cli("import", str(src), "--name", "sent", "--new-version", "--store", str(root))
    assert forced.returncode == 0 and "sent@2" in forced.stdout, forced.stderr
    # different content under the same name is a new version as before
    changed = cli("import", str(adapter(tmp_path, "b")), "--name", "sent", "--store", str(root))
    assert changed.returncode == 0 and "sent@3" in changed.stdout
    # an export of sent@1 imported back is the same content too
    with Store(root) as s:
        s.export("sent@1", tmp_path / "exp")
    back = cli("import", str(tmp_path / "exp"), "--name", "sent", "--store", str(root))
    assert back.returncode == 0 and "already" in back.stdout and "sent@2" in back.stdout


def test_import_dir_api_reports_the_existing_version(store: Store, tmp_path: Path):
    from adapters_store import AlreadyStored

    src = adapter(tmp_path, "a")
    v = store.import_dir(src, "sent")
    with pytest.raises(AlreadyStored) as err:
        store.import_dir(src, "sent")
    assert err.value.version.ref == v.ref and v.ref in err.value.message
    assert store.import_dir(src, "sent", new_version=True).ref == "sent@2"
    assert [p.name for p in store.tmp.iterdir() if not p.name.startswith("w-")] == []


# ---------------------------------------------------------------------------- a damaged index


def _filled(tmp_path: Path) -> Path:
    root = tmp_path / "damaged"
    with Store(root) as s:
        for i in range(40):  # enough rows for store.db to span many pages
            s.import_dir(adapter(tmp_path, f"v{i}"), f"name-{i % 4}", lineage={"note": "x" * 500})
    return root


def _garbage_over_everything(db: Path) -> None:
    db.write_bytes(os.urandom(4096))


def _garbage_mid_file(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[4096:len(data) - 4096] = b"\xA5" * (len(data) - 8192)  # the header page intact, the rest not
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_garbage_over_everything, _garbage_mid_file], ids=["not-a-database", "malformed"])
def test_a_damaged_index_is_a_clean_error_that_points_at_the_adapters(tmp_path: Path, damage):
    from adapters_store.errors import DamagedIndex

    root = _filled(tmp_path)
    db = root / "store.db"
    assert not (root / "store.db-wal").exists() or (root / "store.db-wal").stat().st_size == 0
    damage(db)
    with pytest.raises(DamagedIndex) as err:
        with Store(root) as s:
            s.list()
    assert str(db) in err.value.message and str(root / "versions") in err.value.hint
    proc = cli("list", "--store", str(root))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.stderr.startswith("error: the store's index") and "hint: " in proc.stderr

    # What the hint says works: the version directories import into a new store, lineage kept.
    with Store(tmp_path / "new") as s:
        for path in sorted((root / "versions" / "name-1").iterdir(), key=lambda p: int(p.name)):
            s.import_dir(path, "name-1")
        assert [v.number for v in s.list("name-1")] == list(range(1, 11))
        assert s.resolve("name-1@1").lineage["note"] == "x" * 500
