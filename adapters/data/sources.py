"""Reading training data from where it lives, into plain tables, with a hash of its content.

Sources: a CSV / TSV / JSON lines / JSON / Parquet file (optionally .gz / .bz2), a directory saved
with datasets' ``save_to_disk`` (Dataset or DatasetDict), a directory of split files (train.*,
dev.* or validation.*, test.*), an HF hub dataset name, or a ``builtin:`` sample set.
Used by ``adapters.data.splits.load_splits``; tables are ``{column: list}`` dicts or ``datasets.Dataset``
objects (those are only materialized after the needed columns are picked).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
import zlib
from pathlib import Path
from typing import Any

from adapters.data.builtin import BUILTIN_DATASETS, PREFIX, is_builtin, load_builtin
from adapters.errors import DataError
from adapters.pathlike import looks_like_local_source

Table = dict[str, list]

FILE_TYPES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open}
SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "val": "dev",
               "test": "test"}


def read_source(source: str, subset: str | None = None) -> tuple[dict[str, Any], str]:
    """split name -> table (a dict of lists or a datasets.Dataset), and a sha256 of the content.

    Splits the source brings are named train / dev / test; unsplit data comes as train only.
    """
    if is_builtin(source):
        table, sha = load_builtin(source)
        return {"train": table}, sha
    path = Path(source).expanduser()
    if path.is_file():
        return {"train": _read_file(path)}, _hash_paths([path], None)
    if path.is_dir():
        return _read_dir(path)
    check_local_source(source)
    return _read_hub(source, subset)


def check_local_source(source: str) -> None:
    """Refuse a data.source that is meant as a local path but names nothing (milliseconds, so
    it can run before any model code loads)."""
    if is_builtin(source) or not looks_like_local_source(source) or Path(source).expanduser().exists():
        return
    raise DataError(f"data file not found: {source}",
                    "check the path in data.source (in a config file a relative path starts "
                    "from the file's folder; given with --set, from the current directory)")


def _file_type(path: Path) -> tuple[str | None, Any]:
    suffixes = [s.lower() for s in path.suffixes]
    opener = open
    if suffixes and suffixes[-1] in COMPRESSED:
        opener = COMPRESSED[suffixes.pop()]
    return (FILE_TYPES.get(suffixes[-1]) if suffixes else None), opener


def _read_file(path: Path) -> Table:
    kind, opener = _file_type(path)
    if kind is None:
        raise DataError(f"unsupported data file type: {path.name}",
                        "use CSV (.csv/.tsv), JSON lines (.jsonl/.json), or Parquet (.parquet), "
                        "optionally .gz or .bz2 compressed")
    columns_only = ""  # how a file with columns but no rows is described
    if kind == "parquet":
        table = _read_parquet(path)
        columns_only = "columns but " if table else ""
    else:
        text = _read_text(path, opener)
        if kind in ("csv", "tsv"):
            csv.field_size_limit(2**31 - 1)  # long documents exceed the 128 KiB default
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if kind == "tsv" else ",")
            try:
                table = _rows_to_table(list(reader), path)
            except csv.Error as exc:
                raise DataError(f"{path} is not valid CSV near line {reader.line_num}: {exc}",
                                "fix the quoting on that line, or save the file again as CSV") from None
            columns_only = "a header but " if reader.fieldnames else ""
        else:
            table = _read_json(text, path)
    if not _row_count(table):
        # Said here, naming the file: later steps would only see a table without columns and
        # ask for a column mapping, which is not what is wrong.
        split = SPLIT_NAMES.get(path.name.split(".")[0].lower())
        hint = "add labelled rows to it"
        if split in ("dev", "test"):
            hint += f", or remove it so that the {split} split is cut from train"
        raise DataError(f"{path} is empty: it has {columns_only}no data rows", hint)
    return table


def _row_count(table: Table) -> int:
    return max((len(v) for v in table.values()), default=0)


def _read_parquet(path: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pydict()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file: {exc}",
                        "the file is damaged or not Parquet: write it again (e.g. pandas "
                        "DataFrame.to_parquet), or export the data as CSV or JSON lines") from None


def _read_text(path: Path, opener) -> str:
    """The whole file as text: UTF-8 (a BOM is dropped), and no NUL characters.

    A NUL never belongs in a CSV or JSON text file; it means a binary file, or UTF-16 text (whose
    ASCII characters would decode as UTF-8 with a NUL between each). Training on it would feed
    the model garbage without a word, so the file is refused, naming the line."""
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # a damaged .gz / .bz2
        raise DataError(f"cannot read {path}: {exc}",
                        "the file is damaged: decompress it to check, or write it again") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{path} is UTF-16 text (it starts with a UTF-16 byte order mark), not UTF-8",
                        "save the file as UTF-8 (e.g. iconv -f utf-16 -t utf-8 in.csv > out.csv)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path} is not UTF-8 text: byte {raw[exc.start]:#04x} at line {line} "
                        f"(byte offset {exc.start}) is not valid UTF-8",
                        "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv, or "
                        "\"CSV UTF-8\" in a spreadsheet's save dialog)") from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        utf16 = text.count("\0") * 3 > len(text)  # UTF-16 without a byte order mark
        raise DataError(f"{path} has a NUL character at line {line}: "
                        + ("it looks like UTF-16 text, not UTF-8" if utf16
                           else "a text file never holds one (part of it may be binary)"),
                        "save the file as UTF-8 (e.g. iconv -f utf-16 -t utf-8)" if utf16 else
                        "remove the NUL characters (e.g. tr -d '\\000' < in.csv > out.csv) or fix "
                        "whatever wrote them")
    return text


def _read_json(text: str, path: Path) -> Table:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return _rows_to_table(json.loads(text), path)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}", "fix the file or write JSON lines") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if number == 1 and stripped.startswith("{"):
                    return _read_json_columns(text, path)
                raise DataError(f"{path} line {number} is not valid JSON: {exc.msg}",
                                "write one JSON object per line (JSON lines)") from None
    return _rows_to_table(rows, path)


def _read_json_columns(text: str, path: Path) -> Table:
    """A single JSON object of equal-length lists: {"text": [...], "label": [...]}."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}", "write one JSON object per line") from None
    if not all(isinstance(v, list) for v in obj.values()) or len({len(v) for v in obj.values()}) > 1:
        raise DataError(f"{path} holds one JSON object that is not a table of equal-length lists",
                        "write one JSON object per line (JSON lines), or a list of objects")
    return obj


def _rows_to_table(rows: list, path: Path) -> Table:
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: every row must be an object with named fields",
                        'e.g. {"text": "...", "label": "..."} per line')
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in names if name is not None}


def _read_dir(path: Path) -> tuple[dict[str, Any], str]:
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        import datasets

        files = sorted(p for p in path.rglob("*") if p.is_file())
        return _datasets_splits(datasets.load_from_disk(str(path)), str(path)), _hash_paths(files, path)
    found: dict[str, Path] = {}
    for file in path.iterdir():
        stem = file.name.split(".")[0].lower()
        if file.is_file() and stem in SPLIT_NAMES and _file_type(file)[0]:
            split = SPLIT_NAMES[stem]
            if split in found:
                raise DataError(f"{path} has two files for the {split} split: "
                                f"{found[split].name} and {file.name}", "keep one of them")
            found[split] = file
    if "train" not in found:
        raise DataError(f"{path} is neither a directory saved with datasets' save_to_disk nor has a "
                        "train file (train.csv / train.jsonl / train.parquet)",
                        "point data.source at a data file, or name the split files train.*, "
                        "dev.* (or validation.*) and test.*")
    sha = _hash_paths([found[split] for split in sorted(found)], path)
    return {split: _read_file(file) for split, file in found.items()}, sha


def _read_hub(name: str, subset: str | None) -> tuple[dict[str, Any], str]:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    known = ", ".join(PREFIX + n for n in BUILTIN_DATASETS)
    local_hint = ("pass a local file (CSV, JSONL, Parquet), a directory saved with "
                  f"datasets' save_to_disk, or a built-in ({known}) as data.source")
    try:
        loaded = datasets.load_dataset(name, subset)
    except ConnectionError as exc:
        raise DataError(f"'{name}' is not a local file, and the Hugging Face hub is unreachable "
                        f"to load it from ({exc})", local_hint) from None
    except DatasetNotFoundError:
        raise DataError(f"'{name}' is neither a local file or directory nor a dataset on the "
                        "Hugging Face hub", local_hint) from None
    except Exception as exc:  # noqa: BLE001 - anything the hub loader raises is a data problem here
        raise DataError(f"could not load the hub dataset '{name}': {exc}",
                        "check data.source and data.subset, or " + local_hint) from None
    fingerprints = {split: ds._fingerprint for split, ds in loaded.items()}
    sha = hashlib.sha256(json.dumps([name, subset, fingerprints], sort_keys=True).encode())
    return _datasets_splits(loaded, name), sha.hexdigest()


def _datasets_splits(obj: Any, source: str) -> dict[str, Any]:
    """A Dataset or DatasetDict -> {train/dev/test: Dataset}."""
    if not hasattr(obj, "keys"):
        return {"train": obj}
    named = {SPLIT_NAMES[k.lower()]: obj[k] for k in obj if k.lower() in SPLIT_NAMES}
    if "train" not in named:
        if len(obj) != 1:
            raise DataError(f"{source} has no train split (splits: {', '.join(obj)})",
                            "save the training rows under the split name 'train'")
        named = {"train": next(iter(obj.values()))}
    return named


def _hash_paths(files: list[Path], root: Path | None) -> str:
    """sha256 over file contents; with a root also over their relative names (split files)."""
    digest = hashlib.sha256()
    for file in files:
        if root is not None:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
