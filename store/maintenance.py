"""Store maintenance, a mixin of Store: tmp cleanup after crashes, export, check, open_file,
verify, gc, diff."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from store import files as fs
from store.errors import DestinationExists, IntegrityError, RefNotFound
from store.locks import OwnerLock
from store.model import GcPlan, Problem, Version


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
        """Copy the version's directory (PEFT files + manifest.json) to ``dest``, writable."""
        version = self.resolve(ref)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise DestinationExists(f"{dest} exists and is not an empty directory",
                                    hint="pick a new path or empty it first")
        dest.mkdir(parents=True, exist_ok=True)
        for rel in [*version.files, fs.MANIFEST]:
            src = version.path / rel
            if not src.exists() and rel == fs.MANIFEST:
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
        return dest

    def check(self, ref: str | Version) -> Version:
        """Re-hash one version's files; raise IntegrityError naming the first bad file."""
        version = ref if isinstance(ref, Version) else self.resolve(ref)
        for rel, info in sorted(version.files.items()):
            path = version.path / rel
            try:
                sha, _size = fs.sha256_file(path)
            except FileNotFoundError:
                raise IntegrityError(f"{version.ref}: {path} is missing",
                                     hint=_repair_hint(version)) from None
            if sha != info["sha256"]:
                raise IntegrityError(
                    f"{version.ref}: {path} does not match its recorded sha256 (corrupted)",
                    hint=_repair_hint(version))
        return version

    def open_file(self, ref: str, relpath: str) -> bytes:
        """The bytes of one file of a version, checked against its recorded sha256."""
        version = self.resolve(ref)
        info = version.files.get(relpath)
        if info is None:
            raise RefNotFound(f"{version.ref} has no file {relpath!r}",
                              hint=f"its files: {', '.join(sorted(version.files))}")
        path = version.path / relpath
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{version.ref}: {path} is missing",
                                 hint=_repair_hint(version)) from None
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise IntegrityError(f"{version.ref}: {path} does not match its recorded sha256",
                                 hint=_repair_hint(version))
        return data

    # ------------------------------------------------------------------ verify

    def verify(self, ref: str | None = None) -> list[Problem]:
        """Re-hash stored files. With ``ref``, that version only; without, every version, every
        blob, and version dirs that no index row owns. Returns the problems found (empty: clean)."""
        versions = [self.resolve(ref)] if ref is not None else self.list()
        problems: list[Problem] = []
        cache: dict[tuple, str] = {}

        def hash_of(path: Path) -> str:
            st = path.stat()
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in cache:
                cache[key] = fs.sha256_file(path)[0]
            return cache[key]

        blob_users: dict[str, list[str]] = {}
        for v in versions:
            for rel, info in v.files.items():
                blob_users.setdefault(info["sha256"], []).append(f"{v.ref}:{rel}")
        if ref is None:
            for blob in sorted(self.blobs.glob("*/*")):
                sha = hash_of(blob)
                if sha != blob.name:
                    users = ", ".join(blob_users.get(blob.name, [])[:5]) or "no version"
                    problems.append(Problem(blob, "corrupt",
                                            f"blob {blob.name[:16]}… is corrupted: its content no "
                                            f"longer matches its name (used by {users})"))
        for v in versions:
            if not v.path.is_dir():
                problems.append(Problem(v.path, "missing",
                                        f"{v.ref}: its directory {v.path} is missing"))
                continue
            for rel, info in sorted(v.files.items()):
                path = v.path / rel
                try:
                    sha = hash_of(path)
                except FileNotFoundError:
                    problems.append(Problem(path, "missing", f"{v.ref}: {rel} is missing"))
                else:
                    if sha != info["sha256"]:
                        problems.append(Problem(path, "corrupt",
                                                f"{v.ref}: {rel} is corrupted (sha256 "
                                                f"{sha[:12]}…, expected {info['sha256'][:12]}…)"))
                blob = fs.blob_path(self.blobs, info["sha256"])
                if not blob.exists():
                    problems.append(Problem(blob, "missing",
                                            f"{v.ref}: the blob of {rel} is missing from blobs/"))
                elif ref is not None and hash_of(blob) != info["sha256"]:
                    problems.append(Problem(blob, "corrupt",
                                            f"{v.ref}: the blob of {rel} is corrupted"))
            problems.extend(self._check_manifest(v))
        if ref is None:
            problems.extend(Problem(p, "stray", f"{p} is not a committed version (crash debris); "
                                    "`adapters gc` removes it") for p in self._stray_dirs())
        return problems

    def _check_manifest(self, v: Version) -> list[Problem]:
        path = v.path / fs.MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return [Problem(path, "manifest", f"{v.ref}: manifest.json is missing")]
        except ValueError:
            return [Problem(path, "manifest", f"{v.ref}: manifest.json is not valid JSON")]
        if not isinstance(manifest, dict) or manifest.get("digest") != v.digest:
            return [Problem(path, "manifest",
                            f"{v.ref}: manifest.json does not match the index (digest)")]
        return []

    def _stray_dirs(self) -> list[Path]:
        with self._read() as db:
            owned = {(n, str(k)) for n, k in db.execute("SELECT name, number FROM versions")}
        stray = []
        for name_dir in sorted(self.versions_dir.iterdir()):
            if not name_dir.is_dir():
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
        with self._locked():
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

    def diff(self, ref_a: str, ref_b: str) -> dict[str, Any]:
        """Config, lineage, metrics and files of two versions side by side: for each section the
        keys that differ (``changed``: [a, b]), that only one has, and the shared ones."""
        a, b = self.resolve(ref_a), self.resolve(ref_b)
        sections = {
            "config": (_config(a), _config(b)),
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


def _config(v: Version) -> dict[str, Any]:
    try:
        data = json.loads((v.path / fs.CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return _flatten(data) if isinstance(data, dict) else {}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


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
