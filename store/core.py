"""The Store: put, resolve, list, tag, untag, remove.

Concurrency model: one lock file (``<root>/.lock``) serialises every change to the index and to
``versions/``; the slow part of a put (hashing, writing blobs, building the version dir) runs
outside it, in a staging dir ``tmp/w-<pid>-<id>/`` private to this process and marked alive by a
lock of its own. A dead writer's staging dir (its lock is free) is swept on the next open, together
with any ``versions/<name>/<n>`` dir that has no committed row (a writer killed between moving its
dir in and committing). A put also holds ``<root>/.puts.lock`` shared from its first blob to its
commit, and gc holds it exclusively, so gc never deletes a blob an in-flight put relies on.

Readers never take a lock on their fast path: SQLite WAL gives them a consistent snapshot, a
version's row is committed only after its directory is in place, and stored files are immutable.
When a reader finds something wrong (a file missing, a directory no row owns), it looks again
under the store lock, where no writer is half-way, before it reports anything: a version removed
meanwhile is "not found", never "corrupt".
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters_store import files as fs
from adapters_store.errors import (
    AliasInUse,
    AlreadyStored,
    DamagedIndex,
    InvalidMetadata,
    RefNotFound,
    StoreError,
    StoreLocked,
    StoreNotFound,
)
from adapters_store.locks import LockTimeout, OwnerLock, ProcessLock, SharedLock
from adapters_store.maintenance import Maintenance
from adapters_store.model import Version, lineage_label
from adapters_store.queries import alias_hint, load_versions, prefixed, resolve_row
from adapters_store.refs import LATEST, check_alias, check_name, parse_ref


def default_root() -> Path:
    env = os.environ.get("ADAPTERS_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("adapters"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_seconds(value: str | float | int | None) -> float | None:
    """Epoch seconds from a time the store records (``created``: ISO 8601 in UTC, as ``_now``
    writes it) or from a number already in seconds; None for a missing or unreadable value.
    A time without a zone is read as UTC, the zone the store writes in."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value if value is not None else {})  # keeps the caller's key order
    except (TypeError, ValueError) as exc:
        raise InvalidMetadata(
            f"{what} cannot be stored as JSON: {exc}",
            hint=f"pass {what} as a dict of str, numbers, lists and dicts") from None


class Store(Maintenance):
    """A versioned, content-addressed adapter store rooted at ``root``."""

    def __init__(self, root: str | os.PathLike | None = None, *, lock_timeout: float = 120.0,
                 durable: bool = True, create: bool = True):
        """Open the store at ``root``; ``create=False`` (what read-only commands use) refuses a
        path that holds no store instead of making one there."""
        self.root = Path(root).expanduser() if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store path {self.root} exists and is not a directory",
                             hint="pass --store with a directory, or set $ADAPTERS_HOME")
        if not create and not (self.root / "store.db").is_file():
            raise StoreNotFound(
                f"no adapter store at {self.root}" + (
                    " (the directory exists but holds no store.db)" if self.root.exists() else ""),
                hint="check the path given to --store or $ADAPTERS_HOME; a store is made by the "
                "first `adapters import` or `adapters train` into it")
        self.blobs = self.root / "blobs" / "sha256"
        self.versions_dir = self.root / "versions"
        self.tmp = self.root / "tmp"
        try:
            for d in (self.blobs, self.versions_dir, self.tmp):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store at {self.root}: {exc}",
                             hint="pass --store with a writable directory") from None
        self.durable = durable
        self._lock_timeout = lock_timeout
        self._lock = ProcessLock(self.root / ".lock", timeout=lock_timeout)
        self._puts = SharedLock(self.root / ".puts.lock", self.root / ".gc-gate.lock",
                                timeout=lock_timeout)
        self._mutex = threading.RLock()
        self._stage_mutex = threading.Lock()
        self._stage: tuple | None = None  # (pid, staging dir, OwnerLock), made on first write
        self._stage_finalizer = None
        self._conn = self._connect()
        self._clean_tmp()

    def _connect(self) -> sqlite3.Connection:
        from adapters_store.schema import connect  # migrations serialise on SQLite's BEGIN IMMEDIATE

        with self._index_errors():
            return connect(self.root / "store.db", durable=self.durable)

    @contextmanager
    def _index_errors(self) -> Iterator[None]:
        """A store.db SQLite cannot read ("file is not a database", "malformed") as a DamagedIndex
        that says what to do; its subclasses (locked, constraint, ...) are not damage and pass."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:
                raise
            raise DamagedIndex(
                f"the store's index {self.root / 'store.db'} cannot be read: {exc}",
                hint=f"the adapters themselves are plain PEFT directories under {self.versions_dir}: restore "
                "store.db from a backup, or move it aside and `adapters import` those directories into a new store",
            ) from None

    def close(self) -> None:
        """Close the index and drop this process's staging dir (also done at exit)."""
        if self._stage_finalizer is not None:
            self._stage_finalizer()
        with self._mutex:
            self._conn.close()
        self._lock.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ------------------------------------------------------------------ locking and transactions

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._lock.acquire()
        except LockTimeout:
            raise StoreLocked(
                f"another process has held the store lock {self.root / '.lock'} for over "
                f"{self._lock_timeout:.0f} s", hint="wait for it to finish, then retry") from None
        try:
            yield
        finally:
            self._lock.release()

    def _timeout(self, path: Path) -> StoreLocked:
        return StoreLocked(f"another process has held the store lock {path} for over "
                           f"{self._lock_timeout:.0f} s", hint="wait for it to finish, then retry")

    @contextmanager
    def _putting(self) -> Iterator[None]:
        """Held by a put from its first blob to its commit (shared with other puts)."""
        try:
            self._puts.acquire_shared()
        except LockTimeout:
            raise self._timeout(self._puts.path) from None
        try:
            yield
        finally:
            self._puts.release_shared()

    @contextmanager
    def _no_puts(self) -> Iterator[None]:
        """Held by gc: no put is between its first blob and its commit meanwhile."""
        try:
            token = self._puts.acquire_exclusive()
        except LockTimeout:
            raise self._timeout(self._puts.path) from None
        try:
            yield
        finally:
            self._puts.release_exclusive(token)

    @contextmanager
    def _write(self, undo: list | None = None) -> Iterator[sqlite3.Connection]:
        """File lock + BEGIN IMMEDIATE; commit on success. On any error (the COMMIT's included)
        roll back and run the ``undo`` callbacks while the lock is still held."""
        with self._locked(), self._mutex, self._index_errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                for fn in reversed(undo or []):
                    try:
                        fn()
                    except OSError:
                        pass
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several SELECTs."""
        with self._mutex, self._index_errors():
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _staging(self) -> Path:
        """This process's private dir under tmp/, alive as long as its lock is held: the kernel
        drops the lock when the process dies (even by SIGKILL), which marks the dir as debris."""
        with self._stage_mutex:
            if self._stage is not None and self._stage[0] == os.getpid():
                return self._stage[1]
            with self._locked():  # the sweeper runs under this lock too: it never sees a new
                staging = self.tmp / f"w-{os.getpid()}-{uuid.uuid4().hex[:12]}"  # dir unlocked
                staging.mkdir()
                lock = OwnerLock(staging / ".lock")
                if not lock.try_acquire():
                    raise StoreError(f"cannot lock the staging dir {staging}",
                                     hint=f"check that {self.tmp} is writable")
            self._stage = (os.getpid(), staging, lock)
            self._stage_finalizer = weakref.finalize(self, _drop_staging, staging, lock,
                                                     os.getpid())
            return staging

    # ------------------------------------------------------------------ writing

    def put(self, src_dir: str | os.PathLike, name: str, *, lineage: dict | None = None,
            metrics: dict | None = None, parent: str | None = None,
            run_id: str | None = None) -> Version:
        """Store the PEFT directory ``src_dir`` as the next version of ``name``.

        A directory with its own lineage file (``adapter_manager.json``, written by training and
        merging) is recorded from it: lineage, and unless given, its metrics, parent and run id.
        That file travels with the adapter, so the version's record is derived from it rather
        than passed beside it; a ``lineage`` or ``parent`` that contradicts it is refused."""
        check_name(name)
        src = Path(src_dir)
        entries, config, _manifest = fs.scan_source(src)
        own = fs.read_lineage(src)
        if own is not None:
            if lineage is not None and json.loads(_json(lineage, "lineage")) != own:
                raise ValueError(f"{src} has its own lineage ({fs.METADATA_FILE}); pass no other lineage")
            recorded_parent = own.get("parent")
            if parent is not None and recorded_parent is not None and parent != recorded_parent:
                raise ValueError(f"parent {parent!r} contradicts {fs.METADATA_FILE}'s parent {recorded_parent!r}")
            lineage = own
            metrics = metrics if metrics is not None else own.get("metrics")
            parent = parent if parent is not None else recorded_parent
            run_id = run_id if run_id is not None else own.get("run_id")
        return self._put(entries, config, name, lineage=lineage, metrics=metrics, parent=parent,
                         run_id=run_id)

    def import_dir(self, src: str | os.PathLike, name: str, *,
                   lineage: dict | None = None, new_version: bool = False) -> Version:
        """Import a PEFT directory made elsewhere; base, method and task come from its
        adapter_config.json, lineage/metrics/parent from a store manifest.json if it has one.

        Content that is already a version of ``name`` is not stored twice: AlreadyStored names
        that version (its ``version``), unless ``new_version`` asks for another one."""
        check_name(name)
        entries, config, manifest = fs.scan_source(Path(src))
        manifest = manifest or {}
        if lineage is None:
            lineage = manifest.get("lineage") if isinstance(manifest.get("lineage"), dict) else None
        metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else None
        return self._put(entries, config, name, lineage=lineage, metrics=metrics,
                         parent=manifest.get("parent"), run_id=manifest.get("run_id"),
                         parent_digest=manifest.get("parent_digest"), dedupe=not new_version)

    def _put(self, entries: list[tuple[str, Path]], config: dict, name: str, *,
             lineage: dict | None, metrics: dict | None, parent: str | None,
             run_id: str | None, parent_digest: str | None = None,
             dedupe: bool = False) -> Version:
        lineage = fs.complete_lineage(lineage, config)
        lineage_json, metrics_json = _json(lineage, "lineage"), _json(metrics, "metrics")
        parent_ref, parent_digest = self._parent(parent, parent_digest)
        with self._putting():
            return self._put_held(entries, name, lineage, metrics, lineage_json, metrics_json,
                                  parent_ref, parent_digest, run_id, dedupe)

    def _put_held(self, entries: list[tuple[str, Path]], name: str, lineage: dict,
                  metrics: dict | None, lineage_json: str, metrics_json: str,
                  parent_ref: str | None, parent_digest: str | None, run_id: str | None,
                  dedupe: bool) -> Version:
        staging = self._staging()
        vdir = staging / f"v-{uuid.uuid4().hex}"
        try:
            files: dict[str, dict[str, Any]] = {}
            for rel, path in entries:
                for attempt in range(5):
                    sha, size = fs.ingest(path, self.blobs, staging, durable=self.durable)
                    try:
                        fs.link_or_copy(fs.blob_path(self.blobs, sha), vdir / rel)
                        break
                    except FileNotFoundError:  # a gc that ignores .puts.lock took the blob
                        if attempt == 4:
                            raise
                files[rel] = {"sha256": sha, "size": size}
            digest = fs.content_digest(files)
            size_bytes = sum(f["size"] for f in files.values())
            created = _now()
            undo: list = []
            with self._write(undo) as db:
                if dedupe:
                    same = db.execute(f"SELECT {prefixed('v')} FROM versions v WHERE v.name = ?"
                                      " AND v.digest = ? ORDER BY v.number DESC LIMIT 1",
                                      (name, digest)).fetchone()
                    if same is not None:
                        old = load_versions(db, [same], self.versions_dir)[0]
                        raise AlreadyStored(
                            f"this content is already stored as {old.ref} ({old.short_digest}); "
                            "nothing imported",
                            hint=f"use {old.ref}, or pass --new-version (new_version=True) to "
                            "store it again as a new version", version=old)
                # blobs that a gc ignoring .puts.lock removed since: put them back from our links
                for rel, info in files.items():
                    blob = fs.blob_path(self.blobs, info["sha256"])
                    if not blob.exists():
                        blob.parent.mkdir(parents=True, exist_ok=True)
                        fs.link_or_copy(vdir / rel, blob)
                row = db.execute("SELECT next_number FROM adapters WHERE name = ?",
                                 (name,)).fetchone()
                if row is None:
                    db.execute("INSERT INTO adapters (name, next_number, created) VALUES (?, 1, ?)",
                               (name, created))
                    number = 1
                else:
                    number = row[0]
                manifest = {
                    fs.MANIFEST_KEY: 1, "name": name, "number": number, "digest": digest,
                    "created": created, "parent": parent_ref, "parent_digest": parent_digest,
                    "run_id": run_id,
                    "lineage": lineage, "metrics": metrics or {}, "files": files,
                }
                mpath = vdir / fs.MANIFEST
                # compact: json's C encoder only runs without indent (0.4 ms saved per put)
                mpath.write_text(json.dumps(manifest, sort_keys=True) + "\n")
                os.chmod(mpath, 0o444)
                if self.durable:  # the links inside the version dir, before it is moved in
                    for sub in {vdir, *((vdir / rel).parent for rel in files)}:
                        fs.fsync_dir(sub)
                target = self.versions_dir / name / str(number)
                if target.exists():  # debris of a writer that died before committing this number
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                # From here until COMMIT, versions/<name>/<n> has no row. A crash leaves it as
                # debris, removed by the next sweep (which holds the lock, so it never sees a
                # live writer in this window) or by the next put of this number, as above.
                os.replace(vdir, target)
                undo.append(lambda: shutil.rmtree(target))
                if self.durable:
                    fs.fsync_dir(target.parent)
                cur = db.execute(
                    "INSERT INTO versions (name, number, digest, created, parent, parent_digest,"
                    " run_id, base, method, task, lineage, metrics, size_bytes)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, number, digest, created, parent_ref, parent_digest, run_id,
                     lineage_label(lineage, "base", "id"), lineage_label(lineage, "method", "kind"),
                     lineage_label(lineage, "task", "kind"), lineage_json, metrics_json, size_bytes))
                db.executemany(
                    "INSERT INTO files (version_id, relpath, sha256, size) VALUES (?, ?, ?, ?)",
                    [(cur.lastrowid, rel, f["sha256"], f["size"]) for rel, f in files.items()])
                db.execute("UPDATE adapters SET next_number = ? WHERE name = ?",
                           (number + 1, name))
        finally:
            if vdir.exists():
                shutil.rmtree(vdir, ignore_errors=True)
        return Version(name=name, number=number, digest=digest, created=created, aliases=[],
                       parent=parent_ref, run_id=run_id, lineage=lineage, metrics=metrics or {},
                       files=files, path=target)

    def _parent(self, parent: str | None,
                digest: str | None = None) -> tuple[str | None, str | None]:
        """A parent in this store is recorded as its canonical name@n and its digest; anything
        else (a hub id, a path, a version of another store) is kept as given. ``digest`` (from an
        imported manifest) finds the parent by content, since name@n may mean another adapter
        in this store."""
        if not parent and not digest:
            return None, None
        try:
            v = self.resolve(digest if isinstance(digest, str) else parent)
        except (RefNotFound, ValueError):
            return (str(parent) if parent else None), digest
        return v.ref, v.digest

    def tag(self, ref: str, alias: str) -> Version:
        """Point ``alias`` of the ref's adapter at that version (moving it if it was elsewhere)."""
        check_alias(alias)
        with self._write() as db:
            row = resolve_row(db, parse_ref(ref), self.root)
            db.execute("INSERT OR REPLACE INTO aliases (name, alias, version_id, updated)"
                       " VALUES (?, ?, ?, ?)", (row["name"], alias, row["id"], _now()))
            return load_versions(db, [row], self.versions_dir)[0]

    def untag(self, name_or_ref: str, alias: str) -> Version:
        """Remove ``alias`` from an adapter. With a version ref (name@3) it must point there."""
        check_alias(alias)
        parsed = parse_ref(name_or_ref)
        with self._write() as db:
            name = parsed.name
            expected = None
            if parsed.alias != LATEST:  # a version ref: the alias must point at that version
                expected = resolve_row(db, parsed, self.root)
                name = expected["name"]
            row = db.execute(f"SELECT {prefixed('v')} FROM aliases a JOIN versions v"
                             " ON v.id = a.version_id WHERE a.name = ? AND a.alias = ?",
                             (name, alias)).fetchone()
            if row is None or (expected is not None and row["id"] != expected["id"]):
                where = f"{expected['name']}@{expected['number']}" if expected is not None else name
                have = alias_hint(db, name)
                raise RefNotFound(f"{where} has no alias {alias!r}", hint=have)
            db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            return load_versions(db, [row], self.versions_dir)[0]

    def remove(self, ref: str, force: bool = False) -> Version:
        """Remove one version (its number is never reused). Blobs stay until ``gc``."""
        parsed = parse_ref(ref)
        old = self._staging() / f"rm-{uuid.uuid4().hex}"
        with self._write() as db:
            row = resolve_row(db, parsed, self.root)
            version = load_versions(db, [row], self.versions_dir)[0]
            if version.aliases and not force:
                raise AliasInUse(
                    f"{version.ref} carries the alias(es) {', '.join(version.aliases)}",
                    hint=f"drop them first (adapters untag {version.name} "
                    f"{version.aliases[0]}), or pass --force / force=True to remove it anyway")
            db.execute("DELETE FROM versions WHERE id = ?", (row["id"],))
            db.execute("COMMIT")  # the row goes first: a crash from here leaves a dir without a
            db.execute("BEGIN IMMEDIATE")  # row, which is debris that the next sweep removes
            if version.path.exists():
                os.replace(version.path, old)
            try:
                version.path.parent.rmdir()
            except OSError:
                pass
        shutil.rmtree(old, ignore_errors=True)
        return version

    # ------------------------------------------------------------------ reading

    def resolve(self, ref: str) -> Version:
        """The version a ref names: name, name@3, name@alias, name@latest or sha256:<prefix>."""
        parsed = parse_ref(ref)
        with self._read() as db:
            return load_versions(db, [resolve_row(db, parsed, self.root)], self.versions_dir)[0]

    def list(self, name: str | None = None, base: str | None = None, method: str | None = None,
             task: str | None = None, alias: str | None = None) -> list[Version]:
        """Versions matching every given filter, ordered by name then number."""
        where, args = [], []
        for column, value in (("name", name), ("base", base), ("method", method), ("task", task)):
            if value is not None:
                where.append(f"v.{column} = ?")
                args.append(value)
        if alias == LATEST:
            where.append("v.number = (SELECT MAX(number) FROM versions w WHERE w.name = v.name)")
        elif alias is not None:
            where.append("v.id IN (SELECT version_id FROM aliases WHERE alias = ?)")
            args.append(alias)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._read() as db:
            rows = db.execute(f"SELECT {prefixed('v')} FROM versions v{clause}"
                              " ORDER BY v.name, v.number", args).fetchall()
            subset = f"SELECT v.id FROM versions v{clause}" if where else None
            return load_versions(db, rows, self.versions_dir, subset=subset, args=args)

    def names(self) -> list[str]:
        """Adapter names that have at least one version."""
        with self._read() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def latest_numbers(self) -> dict[str, int]:
        """name -> number of its latest version."""
        with self._read() as db:
            return dict(db.execute("SELECT name, MAX(number) FROM versions GROUP BY name"))

    def path(self, ref: str) -> Path:
        """The version's PEFT directory (read-only files)."""
        return self.resolve(ref).path


def _drop_staging(staging: Path, lock, pid: int) -> None:
    if os.getpid() != pid:  # a forked child must not remove its parent's staging dir
        return
    lock.release()  # before the rmtree: closing an unlinked lock file costs milliseconds
    shutil.rmtree(staging, ignore_errors=True)
