"""Files on disk: reading a source adapter dir, safetensors headers, hashing, blobs, links.

Only stdlib here. A safetensors header is read by hand (8-byte little-endian length + JSON), so the
store never needs torch or numpy.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any

from adapters_store.errors import InvalidAdapterDir, PickleRefused

CHUNK = 1 << 20
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# What adapter-manager adds beside peft's two files: the lineage (the one copy that travels with
# the adapter; put() derives a version's recorded lineage, metrics, parent and run from it) and
# the label names of a classifier head.
METADATA_FILE = "adapter_manager.json"
LABEL_MAP_FILE = "label_map.json"
MANIFEST = "manifest.json"
MANIFEST_KEY = "store_manifest"  # marks a manifest.json written by this store
MAX_HEADER = 100 * 1024 * 1024

PEFT_TYPES = {"LORA": "lora", "PREFIX_TUNING": "prefix"}
TASK_TYPES = {
    "SEQ_CLS": "classification",
    "CAUSAL_LM": "causal-lm",
    "TOKEN_CLS": "token-classification",
}


def sha256_file(path: Path) -> tuple[str, int]:
    """Return (hex sha256, size) of the file at ``path``."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def content_digest(files: dict[str, dict[str, Any]]) -> str:
    """The content id of a version: sha256 over ``relpath NUL sha256hex LF`` for sorted relpaths."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]['sha256']}\n".encode())
    return "sha256:" + h.hexdigest()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def blob_path(blobs: Path, sha: str) -> Path:
    return blobs / sha[:2] / sha


class NotAStoredFile(OSError):
    """A path inside the store that is a symlink, or not a regular file, where the store keeps
    only regular files it wrote itself."""


_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW")


def open_inside(base: Path, parts: list[str] | tuple[str, ...]) -> int:
    """Open ``base/parts[0]/.../parts[-1]`` for reading without following a symlink at any step
    below ``base`` (``O_NOFOLLOW`` on each component, resolved relative to its parent). Raises
    FileNotFoundError when a component is missing, NotAStoredFile when one is a symlink or the
    last is not a regular file."""
    display = str(Path(base, *parts))
    if not _DIR_FD:  # pragma: no cover - Windows: check each step, then open
        path = Path(base)
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise NotAStoredFile(errno.ELOOP, "is a symbolic link", display)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    else:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i, part in enumerate(parts):
                if part in ("", ".", "..") or "/" in part:
                    raise NotAStoredFile(errno.EINVAL, "is not a plain relative path", display)
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | (0 if last else os.O_DIRECTORY)
                try:
                    nfd = os.open(part, flags, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise NotAStoredFile(exc.errno, "is a symbolic link", display) from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotAStoredFile(errno.EINVAL, "is not a regular file", display)
    return fd


def hash_inside(base: Path, parts: list[str] | tuple[str, ...]) -> tuple[str, os.stat_result]:
    """(sha256 hex, stat) of a file inside the store, opened with ``open_inside``."""
    fd = open_inside(base, parts)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest(), st


class Mismatch(ValueError):
    """Bytes that do not hash to the sha256 they are stored under."""


def copy_checked(blobs: Path, sha: str, dest: Path, *, durable: bool = False) -> os.stat_result:
    """Copy the blob ``sha`` to the new file ``dest`` while hashing it; Mismatch when its bytes no
    longer hash to its name. Returns the blob's stat."""
    fd = open_inside(blobs, (sha[:2], sha))
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f, open(dest, "xb") as out:
        st = os.fstat(f.fileno())
        while chunk := f.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    if h.hexdigest() != sha:
        raise Mismatch(f"blob {sha[:16]}… does not match its sha256")
    return st


def ingest(src: Path, blobs: Path, staging: Path, *, durable: bool = True) -> tuple[str, int]:
    """Stream ``src`` into a temp file in ``staging`` while hashing; unless a blob with that hash is
    already there, fsync it and move it into ``blobs``. Returns (sha256 hex, size)."""
    h = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=staging, prefix="blob-")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            sha = h.hexdigest()
            dest = blob_path(blobs, sha)
            exists = dest.exists()
            if durable and not exists:
                os.fsync(out.fileno())
        if exists:  # deduplicated: the stored blob is already durable
            os.unlink(tmp_name)
        else:
            os.chmod(tmp_name, 0o444)
            for attempt in range(5):
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(tmp_name, dest)
                    break
                except FileNotFoundError:  # a gc removed the shard as empty: make it again
                    if attempt == 4 or not os.path.exists(tmp_name):
                        raise
            if durable:
                fsync_dir(dest.parent)
        return sha, size
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest``; copy (read-only) where links are not possible."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except FileNotFoundError:
        raise
    except OSError:  # EXDEV, EPERM, EMLINK, filesystems without links
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o444)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and sanity-check a safetensors header without loading tensors."""
    size = path.stat().st_size
    bad = f"{path.name} is not a valid safetensors file"
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER or 8 + n > size:
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        data_len = size - 8 - n
        for key, info in header.items():
            if key == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            if not (0 <= begin <= end <= data_len):
                raise ValueError(f"tensor {key!r} lies outside the file (truncated?)")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidAdapterDir(
            f"{bad}: {exc}", hint=f"re-save the adapter; the file at {path} looks damaged"
        ) from None
    return header


def scan_source(src: Path) -> tuple[list[tuple[str, Path]], dict[str, Any], dict[str, Any] | None]:
    """Check that ``src`` is a PEFT adapter dir the store accepts.

    Returns (sorted [(relpath, path)], adapter_config, store manifest found in src or None).
    Hidden files and dirs (.git, .cache ...) are skipped; a top-level manifest.json written by this
    store is read, not stored. Refuses pickled weights, symlinked dirs and missing PEFT files.
    """
    src = Path(src)
    if not src.is_dir():
        raise InvalidAdapterDir(
            f"{src} is not a directory",
            hint="pass the directory that holds adapter_config.json and adapter_model.safetensors",
        )
    entries: list[tuple[str, Path]] = []
    pickled: list[str] = []
    manifest = None
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        for d in list(dirnames):
            if d.startswith(".") or d == "__pycache__":
                dirnames.remove(d)
            elif (here / d).is_symlink():
                raise InvalidAdapterDir(
                    f"{here / d} is a symlinked directory; the store copies plain files only",
                    hint="copy the adapter into a plain directory first (cp -rL)",
                )
        for name in filenames:
            if name.startswith("."):
                continue
            path = here / name
            rel = path.relative_to(src).as_posix()
            if "\n" in rel or "\0" in rel or "\\" in rel:
                raise InvalidAdapterDir(f"file name {rel!r} has a newline or backslash",
                                        hint="rename the file")
            if not path.is_file():
                raise InvalidAdapterDir(f"{path} is not a regular file (a broken link?)",
                                        hint="remove it or replace it with the file it points to")
            if name.lower().endswith(PICKLE_SUFFIXES):
                pickled.append(rel)
                continue
            if rel == MANIFEST:
                manifest = _read_json(path)
                if not (isinstance(manifest, dict) and manifest.get(MANIFEST_KEY)):
                    raise InvalidAdapterDir(
                        f"{path} is not a store manifest; manifest.json is reserved for the store",
                        hint="rename or remove manifest.json in the adapter directory",
                    )
                continue
            entries.append((rel, path))
    if pickled:
        raise PickleRefused(
            f"pickled weights are refused ({', '.join(sorted(pickled))} in {src}): loading a "
            "pickle can run arbitrary code",
            hint="pass --allow-pickle to `adapters import` to convert adapter_model.bin to "
            "safetensors, or re-save with save_pretrained(..., safe_serialization=True)",
        )
    names = {rel for rel, _ in entries}
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if f not in names]
    if missing:
        raise InvalidAdapterDir(
            f"{src} is not a PEFT adapter directory: {' and '.join(missing)} missing",
            hint="save the adapter with peft's save_pretrained(), which writes both files",
        )
    config = _read_json(src / CONFIG_FILE)
    if not isinstance(config, dict):
        raise InvalidAdapterDir(f"{src / CONFIG_FILE} is not a JSON object",
                                hint="re-save the adapter with save_pretrained()")
    for rel, path in entries:
        if rel.endswith(".safetensors"):
            read_safetensors_header(path)
    entries.sort()
    return entries, config, manifest


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidAdapterDir(f"cannot read {path} as JSON: {exc}",
                                hint="fix or re-save the file") from None


_REWRITE_LINEAGE = "re-save the adapter, or remove the file to store it as a plain PEFT directory"


def read_lineage(src: Path) -> dict[str, Any] | None:
    """The lineage file an adapter directory carries (METADATA_FILE), or None without one."""
    path = Path(src) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapterDir(f"{path} is not valid JSON: {exc}", hint=_REWRITE_LINEAGE) from None
    if not isinstance(value, dict):
        raise InvalidAdapterDir(f"{path} is not a JSON object", hint=_REWRITE_LINEAGE)
    return value


def complete_lineage(lineage: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, Any]:
    """Fill base / method / task from adapter_config.json where the caller did not give them."""
    out = dict(lineage or {})
    if "base" not in out and config.get("base_model_name_or_path"):
        base = {"id": config["base_model_name_or_path"]}
        if config.get("revision"):
            base["revision"] = config["revision"]
        out["base"] = base
    peft_type = config.get("peft_type")
    if "method" not in out and isinstance(peft_type, str):
        out["method"] = {"kind": PEFT_TYPES.get(peft_type.upper(), peft_type.lower()),
                         "config": config}
    task_type = config.get("task_type")
    if "task" not in out and isinstance(task_type, str):
        out["task"] = {"kind": TASK_TYPES.get(task_type.upper(), task_type.lower())}
    return out


def dir_size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
