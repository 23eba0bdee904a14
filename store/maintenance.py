"""Store maintenance, a mixin of Store: tmp cleanup after crashes, export, check, open_file,
verify, gc, diff."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from adapters_store import files as fs
from adapters_store.errors import DestinationExists, DestinationUnwritable, IntegrityError, RefNotFound
from adapters_store.locks import OwnerLock
from adapters_store.model import GcPlan, Problem, Version


class Maintenance:
    """Everything that reads or repairs stored files; mixed into Store."""

    # ------------------------------------------------------------------ crash debris

    def _clean_tmp(self) -> None:
        """Remove staging dirs of dead writers (on open). Cheap when tmp/ is empty."""
        try:
            if not any(self.tmp.iterdir()):
                return
        except FileNotFoundError:
            return
        with self._locked():
            self._sweep_tmp(dry_run=False)

    def _sweep_tmp(self, *, dry_run: bool) -> list[Path]:
        """Dead entries of tmp/ (their lock is free). Caller holds the store lock. When a dead
        writer is found, version dirs without a committed row are removed as well."""
        dead: list[Path] = []
        for entry in sorted(self.tmp.iterdir()):
            if not entry.is_dir() or entry.is_symlink():
                dead.append(entry)
                if not dry_run:
                    entry.unlink(missing_ok=True)
                continue
            lock = OwnerLock(entry / ".lock")
            if not lock.try_acquire():
                continue  # alive (or gone)
            try:
                dead.append(entry)
                if not dry_run:
                    shutil.rmtree(entry, ignore_errors=True)
            finally:
                lock.release()
        if dead and not dry_run:
            for path in self._stray_dirs():
                _remove(path)
        return dead

    # ------------------------------------------------------------------ export and checks

    def export(self, ref: str, dest: str | os.PathLike) -> Path:
        """Copy the version (PEFT files + manifest.json) to ``dest``, a new or empty directory,
        as plain writable files.

        The files come from the content-addressed blobs, each re-hashed while it is copied, and
        no symlink inside the store is followed. They are written into a staging dir next to
        ``dest`` that is renamed into place once complete, so ``dest`` never holds part of an
        export. A damaged version raises IntegrityError and one removed meanwhile RefNotFound;
        either way nothing is left at ``dest``."""
        version = self.resolve(ref)
        dest = Path(dest)
        _check_destination(dest)
        try:
            made = _make_parents(dest.parent)
        except OSError as exc:
            raise _unwritable(dest, exc) from None
        staging = dest.parent / f".{dest.name}.export-{uuid.uuid4().hex[:12]}"
        try:
            try:
                self._copy_out(version, staging)
            except (OSError, fs.Mismatch, IntegrityError) as first:
                if isinstance(first, OSError) and not isinstance(
                        first, (FileNotFoundError, fs.NotAStoredFile)):
                    raise _unwritable(dest, first) from None  # full, read-only: not the store
                shutil.rmtree(staging, ignore_errors=True)
                with self._locked():  # no writer is half-way now: look again
                    version = self._still_there(version, "exported")
                    try:
                        self._copy_out(version, staging, strict=True)
                    except OSError as exc:  # the store's faults are IntegrityErrors by now
                        if isinstance(exc, DestinationUnwritable):
                            raise
                        raise _unwritable(dest, exc) from None
            try:
                os.rename(staging, dest)  # replaces an empty dir; refuses a non-empty one
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise DestinationExists(f"{dest} exists and is not an empty directory",
                                            hint="pick a new path or empty it first") from None
                raise _unwritable(dest, exc) from None
            if self.durable:
                fs.fsync_dir(dest.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            for d in reversed(made):
                try:
                    d.rmdir()
                except OSError:
                    pass
            raise
        return dest

    def _copy_out(self, version: Version, staging: Path, *, strict: bool = False) -> None:
        """Write the version's files into the new dir ``staging``. Lenient (the default): raise
        the first OSError / Mismatch as found; strict: raise IntegrityError saying what is wrong."""
        os.mkdir(staging)
        what = ""
        try:
            for rel, info in sorted(version.files.items()):
                out = staging / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                what = f"the blob of {rel}"
                blob_stat = fs.copy_checked(self.blobs, info["sha256"], out,
                                            durable=self.durable)
                what = rel
                self._check_stored(version, rel, info, blob_stat)
            what = fs.MANIFEST
            manifest = self._read_manifest(version)
            (staging / fs.MANIFEST).write_bytes(manifest)
        except fs.Mismatch:
            if not strict:
                raise
            raise IntegrityError(f"{version.ref}: {what} does not match its recorded sha256 "
                                 "(corrupted)", hint=_repair_hint(version)) from None
        except FileNotFoundError:
            if not strict:
                raise
            raise IntegrityError(f"{version.ref}: {what} is missing",
                                 hint=_repair_hint(version)) from None
        except fs.NotAStoredFile:
            if not strict:
                raise
            raise IntegrityError(f"{version.ref}: {what} is a symbolic link or not a regular "
                                 "file, not the file the store wrote", hint=_repair_hint(version)
                                 ) from None

    def _check_stored(self, version: Version, rel: str, info: dict, blob_stat) -> None:
        """The version dir's copy of ``rel`` is a regular file (no symlink) with the recorded
        hash; a hard link of the blob just hashed needs no second read."""
        parts = self._version_parts(version, rel)
        fd = fs.open_inside(self.versions_dir, parts)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if (st.st_dev, st.st_ino) == (blob_stat.st_dev, blob_stat.st_ino):
            return
        if fs.hash_inside(self.versions_dir, parts)[0] != info["sha256"]:
            raise fs.Mismatch(f"{version.ref}: {rel}")

    def _read_manifest(self, version: Version) -> bytes:
        """The version's manifest.json bytes, checked against the index; IntegrityError if not."""
        try:
            fd = fs.open_inside(self.versions_dir, self._version_parts(version, fs.MANIFEST))
            with os.fdopen(fd, "rb") as f:
                raw = f.read()
            manifest = json.loads(raw)
        except FileNotFoundError:
            raise  # a removed version or a damaged one: the caller looks again under the lock
        except (OSError, ValueError):
            manifest = None
        if not (isinstance(manifest, dict) and manifest.get("digest") == version.digest
                and manifest.get("files") == version.files):
            raise IntegrityError(f"{version.ref}: manifest.json is damaged or does not match "
                                 "the index", hint=_repair_hint(version))
        return raw

    def _version_parts(self, version: Version, rel: str) -> list[str]:
        return [version.name, str(version.number), *rel.split("/")]

    def _still_there(self, version: Version, doing: str) -> Version:
        """``version`` as the index has it now; RefNotFound if it was removed meanwhile."""
        from adapters_store.queries import load_versions, prefixed

        with self._read() as db:
            row = db.execute(f"SELECT {prefixed('v')} FROM versions v WHERE v.name = ? AND"
                             " v.number = ? AND v.digest = ?",
                             (version.name, version.number, version.digest)).fetchone()
            if row is not None:
                return load_versions(db, [row], self.versions_dir)[0]
        raise RefNotFound(f"{version.ref} was removed while it was being {doing}",
                          hint="nothing was written; see `adapters list` for what is stored")

    def _file_problem(self, version: Version) -> str | None:
        """What is wrong with the first bad file of the version dir, or None."""
        for rel, info in sorted(version.files.items()):
            try:
                sha, _st = fs.hash_inside(self.versions_dir, self._version_parts(version, rel))
            except FileNotFoundError:
                return f"{version.ref}: {version.path / rel} is missing"
            except fs.NotAStoredFile:
                return (f"{version.ref}: {version.path / rel} is a symbolic link or not a "
                        "regular file, not the file the store wrote")
            if sha != info["sha256"]:
                return (f"{version.ref}: {version.path / rel} does not match its recorded sha256 "
                        "(corrupted)")
        return None

    def check(self, ref: str | Version) -> Version:
        """Re-hash one version's files; raise IntegrityError naming the first bad file, or
        RefNotFound when the version is removed while it is checked."""
        version = ref if isinstance(ref, Version) else self.resolve(ref)
        if self._file_problem(version) is None:
            return version
        with self._locked():  # no writer is half-way now: look again
            version = self._still_there(version, "checked")
            problem = self._file_problem(version)
        if problem is not None:
            raise IntegrityError(problem, hint=_repair_hint(version))
        return version

    def open_file(self, ref: str, relpath: str) -> bytes:
        """The bytes of one file of a version, read from its blob and checked against its
        recorded sha256."""
        version = self.resolve(ref)
        info = version.files.get(relpath)
        if info is None:
            raise RefNotFound(f"{version.ref} has no file {relpath!r}",
                              hint=f"its files: {', '.join(sorted(version.files))}")
        try:
            return self._read_blob(version, relpath, info)
        except (FileNotFoundError, fs.NotAStoredFile, fs.Mismatch):
            pass
        with self._locked():  # no writer is half-way now: look again
            version = self._still_there(version, "read")
            try:
                return self._read_blob(version, relpath, info)
            except FileNotFoundError:
                msg = f"{version.ref}: {relpath} is missing"
            except fs.NotAStoredFile:
                msg = f"{version.ref}: {relpath} is a symbolic link, not the stored file"
            except fs.Mismatch:
                msg = f"{version.ref}: {relpath} does not match its recorded sha256"
        raise IntegrityError(msg, hint=_repair_hint(version))

    def _read_blob(self, version: Version, rel: str, info: dict) -> bytes:
        fd = fs.open_inside(self.blobs, (info["sha256"][:2], info["sha256"]))
        with os.fdopen(fd, "rb") as f:
            blob_stat = os.fstat(f.fileno())
            data = f.read()
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise fs.Mismatch(rel)
        self._check_stored(version, rel, info, blob_stat)
        return data

    # ------------------------------------------------------------------ verify

    def verify(self, ref: str | None = None) -> list[Problem]:
        """Re-hash stored files. With ``ref``, that version only; without, every version, every
        blob, and version dirs that no index row owns. Returns the problems found (empty: clean).

        Writers may run meanwhile: what looks wrong on the first pass is looked at again under
        the store lock, and only what is still wrong there (of versions that still exist) is
        reported."""
        versions = [self.resolve(ref)] if ref is not None else self.list()
        users: dict[str, list[str]] = {}
        for v in versions:
            for rel, info in v.files.items():
                users.setdefault(info["sha256"], []).append(f"{v.ref}:{rel}")
        cache: dict[tuple, str] = {}
        blobs = sorted(self.blobs.glob("*/*")) if ref is None else []
        found = self._verify_pass(versions, blobs, ref is not None, users, cache)
        if not found and ref is not None:
            return []
        with self._locked():  # writers wait: only what is still wrong now is reported
            problems: list[Problem] = []
            if found:
                suspects = {key for key, _ in found}
                again = []
                for v in versions:
                    if v.ref in suspects:
                        try:
                            again.append(self._still_there(v, "verified"))
                        except RefNotFound:
                            if ref is not None:
                                raise
                cache.clear()
                problems = [p for _, p in self._verify_pass(
                    again, [b for b in blobs if b in suspects], ref is not None, users, cache)]
            if ref is None:
                problems.extend(Problem(p, "stray", f"{p} is not a committed version (crash "
                                        "debris); `adapters gc` removes it")
                                for p in self._stray_dirs())
        return problems

    def _verify_pass(self, versions: list[Version], blobs: list[Path], own_blobs: bool,
                     users: dict[str, list[str]],
                     cache: dict[tuple, str]) -> list[tuple[Any, Problem]]:
        """(what it concerns: a version's ref or a blob path, problem) for ``versions`` and
        ``blobs``; ``own_blobs`` also re-hashes the blobs of ``versions``."""
        found: list[tuple[Any, Problem]] = []

        def hash_of(base: Path, parts: list[str] | tuple[str, ...]) -> str:
            fd = fs.open_inside(base, parts)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in cache:
                cache[key] = fs.hash_inside(base, parts)[0]
            return cache[key]

        for blob in blobs:
            try:
                sha = hash_of(self.blobs, (blob.parent.name, blob.name))
            except FileNotFoundError:
                continue  # removed by gc meanwhile: unused, so no problem
            except fs.NotAStoredFile:
                sha = None
            if sha != blob.name:
                used = ", ".join(users.get(blob.name, [])[:5]) or "no version"
                found.append((blob, Problem(blob, "corrupt",
                                            f"blob {blob.name[:16]}… is corrupted: its content no "
                                            f"longer matches its name (used by {used})")))
        for v in versions:
            problems: list[Problem] = []
            if v.path.is_symlink():
                problems.append(Problem(v.path, "corrupt", f"{v.ref}: its directory {v.path} is "
                                        "a symbolic link, not the directory the store wrote"))
            elif not v.path.is_dir():
                problems.append(Problem(v.path, "missing",
                                        f"{v.ref}: its directory {v.path} is missing"))
            else:
                problems.extend(self._version_problems(v, own_blobs, hash_of))
            found.extend((v.ref, p) for p in problems)
        return found

    def _version_problems(self, v: Version, own_blobs: bool, hash_of) -> list[Problem]:
        problems: list[Problem] = []
        for rel, info in sorted(v.files.items()):
            path = v.path / rel
            try:
                sha = hash_of(self.versions_dir, self._version_parts(v, rel))
            except FileNotFoundError:
                problems.append(Problem(path, "missing", f"{v.ref}: {rel} is missing"))
            except fs.NotAStoredFile:
                problems.append(Problem(path, "corrupt",
                                        f"{v.ref}: {rel} is a symbolic link or not a regular "
                                        "file, not the file the store wrote"))
            else:
                if sha != info["sha256"]:
                    problems.append(Problem(path, "corrupt",
                                            f"{v.ref}: {rel} is corrupted (sha256 "
                                            f"{sha[:12]}…, expected {info['sha256'][:12]}…)"))
            blob = fs.blob_path(self.blobs, info["sha256"])
            try:
                blob_sha = hash_of(self.blobs, (blob.parent.name, blob.name))
            except FileNotFoundError:
                problems.append(Problem(blob, "missing",
                                        f"{v.ref}: the blob of {rel} is missing from blobs/"))
            except fs.NotAStoredFile:
                problems.append(Problem(blob, "corrupt",
                                        f"{v.ref}: the blob of {rel} is not a regular file"))
            else:
                if own_blobs and blob_sha != info["sha256"]:
                    problems.append(Problem(blob, "corrupt",
                                            f"{v.ref}: the blob of {rel} is corrupted"))
        problems.extend(self._check_manifest(v))
        return problems

    def _check_manifest(self, v: Version) -> list[Problem]:
        path = v.path / fs.MANIFEST
        try:
            fd = fs.open_inside(self.versions_dir, self._version_parts(v, fs.MANIFEST))
            with os.fdopen(fd, "rb") as f:
                manifest = json.loads(f.read())
        except FileNotFoundError:
            return [Problem(path, "manifest", f"{v.ref}: manifest.json is missing")]
        except fs.NotAStoredFile:
            return [Problem(path, "manifest", f"{v.ref}: manifest.json is a symbolic link or "
                            "not a regular file")]
        except ValueError:
            return [Problem(path, "manifest", f"{v.ref}: manifest.json is not valid JSON")]
        if not isinstance(manifest, dict) or manifest.get("digest") != v.digest:
            return [Problem(path, "manifest",
                            f"{v.ref}: manifest.json does not match the index (digest)")]
        return []

    def _stray_dirs(self) -> list[Path]:
        """Entries of versions/ that no committed row owns. Exact only under the store lock:
        outside it, a put may be between moving its dir in and committing its row."""
        with self._read() as db:
            owned = {(n, str(k)) for n, k in db.execute("SELECT name, number FROM versions")}
        stray = []
        for name_dir in sorted(self.versions_dir.iterdir()):
            if not name_dir.is_dir() or name_dir.is_symlink():
                stray.append(name_dir)
                continue
            for vdir in sorted(name_dir.iterdir()):
                if (name_dir.name, vdir.name) not in owned:
                    stray.append(vdir)
        return stray

    # ------------------------------------------------------------------ gc

    def gc(self, dry_run: bool = True) -> GcPlan:
        """Blobs no version references, tmp debris of dead writers, version dirs without an index
        row. ``dry_run`` (the default) only reports; otherwise they are deleted."""
        kinds: dict[str, str] = {}
        sizes: dict[str, int] = {}
        with self._no_puts(), self._locked():  # no put holds blobs it has not recorded yet
            for p in self._sweep_tmp(dry_run=True):
                kinds[str(p)], sizes[str(p)] = "tmp", fs.dir_size(p)
            for p in self._stray_dirs():
                kinds[str(p)], sizes[str(p)] = "stray", fs.dir_size(p)
            with self._read() as db:
                used = {r[0] for r in db.execute("SELECT DISTINCT sha256 FROM files")}
            for blob in sorted(self.blobs.glob("*/*")):
                if blob.name not in used:
                    kinds[str(blob)], sizes[str(blob)] = "blob", fs.dir_size(blob)
            if not dry_run:
                self._sweep_tmp(dry_run=False)
                for p, kind in kinds.items():
                    path = Path(p)
                    if kind == "stray":
                        _remove(path)
                    elif kind == "blob":
                        path.unlink(missing_ok=True)
                for shard in self.blobs.iterdir():
                    try:
                        shard.rmdir()  # only empty shards go
                    except OSError:
                        pass
        paths = [Path(p) for p in kinds]
        return GcPlan(files=paths, bytes=sum(sizes.values()), kinds=kinds, dry_run=dry_run)

    # ------------------------------------------------------------------ diff

    def _config(self, v: Version) -> dict[str, Any]:
        """adapter_config.json of a stored version, flattened; {} when it cannot be read (a
        symlink is not followed)."""
        try:
            fd = fs.open_inside(self.versions_dir, self._version_parts(v, fs.CONFIG_FILE))
            with os.fdopen(fd, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return {}
        return _flatten(data) if isinstance(data, dict) else {}

    def diff(self, ref_a: str, ref_b: str) -> dict[str, Any]:
        """Config, lineage, metrics and files of two versions side by side: for each section the
        keys that differ (``changed``: [a, b]), that only one has, and the shared ones."""
        a, b = self.resolve(ref_a), self.resolve(ref_b)
        sections = {
            "config": (self._config(a), self._config(b)),
            "lineage": (_flatten(a.lineage), _flatten(b.lineage)),
            "metrics": (_flatten(a.metrics), _flatten(b.metrics)),
            "files": ({k: v["sha256"] for k, v in a.files.items()},
                      {k: v["sha256"] for k, v in b.files.items()}),
        }
        out: dict[str, Any] = {"a": a.ref, "b": b.ref, "a_digest": a.digest, "b_digest": b.digest,
                               "same_content": a.digest == b.digest, "sections": {}}
        for section, (da, db) in sections.items():
            changed, only_a, only_b, same = {}, {}, {}, {}
            for key in sorted(set(da) | set(db)):
                if key not in db:
                    only_a[key] = da[key]
                elif key not in da:
                    only_b[key] = db[key]
                elif da[key] == db[key]:
                    same[key] = da[key]
                else:
                    changed[key] = [da[key], db[key]]
            out["sections"][section] = {"changed": changed, "only_a": only_a, "only_b": only_b,
                                        "same": same}
        return out


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _check_destination(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise DestinationExists(f"{dest} exists and is not an empty directory",
                                hint="pick a new path or empty it first")


def _unwritable(dest: Path, exc: OSError) -> DestinationUnwritable:
    return DestinationUnwritable(f"cannot write the export to {dest}: {exc.strerror or exc}",
                                 hint="pick a writable path with enough free space; nothing was "
                                 "left there")


def _make_parents(parent: Path) -> list[Path]:
    """Create ``parent`` and its missing ancestors; return the ones created, outermost first."""
    missing = []
    for p in (parent, *parent.parents):
        if p.exists():
            break
        missing.append(p)
    parent.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _repair_hint(version: Version) -> str:
    return (f"run `adapters verify {version.ref}` to list every damaged file; re-import the "
            f"adapter from its source, or `adapters rm {version.ref}`")


def _remove(path: Path) -> None:
    """Remove a stray file or dir under versions/, and its name dir if that is left empty."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
    if path.parent.parent.name == "versions":
        try:
            path.parent.rmdir()
        except OSError:
            pass
