"""Value objects the store hands out: Version, Problem, GcPlan."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def lineage_label(lineage: dict, key: str, inner: str) -> str | None:
    """A lineage's base, method or task as text (``lineage[key][inner]``, or ``lineage[key]``
    itself when it is a plain value). The index stores this to filter on and a Version shows it,
    so ``list(base=...)`` matches exactly the versions whose ``base`` reads so."""
    value = lineage.get(key)
    if isinstance(value, dict):
        value = value.get(inner)
    return str(value) if isinstance(value, (str, int, float)) else None


@dataclass(frozen=True)
class Version:
    """One stored version of an adapter. ``path`` is a plain PEFT directory (read-only files)."""

    name: str
    number: int
    digest: str  # "sha256:<hex>" content id: hash of the sorted (relpath, file sha256) list
    created: str  # ISO 8601, UTC
    aliases: list[str] = field(default_factory=list)
    parent: str | None = None
    run_id: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relpath -> {"sha256", "size"}
    path: Path = field(default_factory=Path)  # no class attribute: _from_row builds it lazily

    @classmethod
    def _from_row(cls, name: str, number: int, digest: str, created: str, aliases: list[str],
                  parent: str | None, run_id: str | None, lineage_json: str, metrics_json: str,
                  files: dict, root: str) -> Version:
        """Fast construction for listings: lineage, metrics and path are parsed on first use,
        so list() of 10,000 versions does not pay for 20,000 JSON parses it may never need."""
        v = object.__new__(cls)
        v.__dict__.update(name=name, number=number, digest=digest, created=created,
                          aliases=aliases, parent=parent, run_id=run_id, files=files,
                          _raw_lineage=lineage_json, _raw_metrics=metrics_json, _root=root)
        return v

    def __getattr__(self, attr: str) -> Any:  # only called for attributes not set yet
        d = self.__dict__
        if attr in ("lineage", "metrics") and "_raw_" + attr in d:
            value = d[attr] = json.loads(d["_raw_" + attr])
            return value
        if attr == "path" and "_root" in d:
            value = d["path"] = Path(f"{d['_root']}/{d['name']}/{d['number']}")
            return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.number}"

    @property
    def size_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())

    @property
    def short_digest(self) -> str:
        return self.digest[: len("sha256:") + 12]

    @property
    def base(self) -> str | None:
        return lineage_label(self.lineage, "base", "id")

    @property
    def method(self) -> str | None:
        return lineage_label(self.lineage, "method", "kind")

    @property
    def task(self) -> str | None:
        return lineage_label(self.lineage, "task", "kind")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "name": self.name,
            "number": self.number,
            "digest": self.digest,
            "created": self.created,
            "aliases": list(self.aliases),
            "parent": self.parent,
            "run_id": self.run_id,
            "base": self.base,
            "method": self.method,
            "task": self.task,
            "size_bytes": self.size_bytes,
            "path": str(self.path),
            "files": {k: dict(v) for k, v in self.files.items()},
            "lineage": self.lineage,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class Problem:
    """One thing ``verify`` found wrong. kind: missing, corrupt, stray, manifest."""

    path: Path
    kind: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class GcPlan:
    """What ``gc`` removes (dry run) or removed: paths (files or debris dirs) and their bytes."""

    files: list[Path]
    bytes: int
    kinds: dict[str, str] = field(default_factory=dict)  # str(path) -> "blob" | "tmp" | "stray"
    dry_run: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "bytes": self.bytes,
            "files": [{"path": str(p), "kind": self.kinds.get(str(p), "")} for p in self.files],
        }
