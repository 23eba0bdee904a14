"""What the Store screen shows, computed from the store without Textual: adapters grouped from
versions, search and filters, and the sections of a version's details."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters_store import Store, Version
from adapters_tui.formatting import human_size, number, timestamp
from adapters_tui.train_config import TRAINING_CONFIG_FILE


@dataclass(frozen=True)
class AdapterRow:
    """One adapter name: its versions that pass the filters (oldest first) and the total count."""

    name: str
    versions: list[Version]
    total_versions: int

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    @property
    def aliases(self) -> str:
        return ", ".join(f"{a}→{v.number}" for v in self.versions for a in v.aliases)


@dataclass
class Filters:
    """Search text (matched against name, ref, aliases, base, method, task and digest) and exact
    filters on method, task and base; None means any."""

    text: str = ""
    method: str | None = None
    task: str | None = None
    base: str | None = None

    def matches(self, v: Version) -> bool:
        if self.method and v.method != self.method:
            return False
        if self.task and v.task != self.task:
            return False
        if self.base and v.base != self.base:
            return False
        needle = self.text.strip().lower()
        if not needle:
            return True
        haystack = " ".join([v.ref, *v.aliases, v.base or "", v.method or "", v.task or "", v.digest])
        return all(part in haystack.lower() for part in needle.split())


def read_versions(root: Path | str | None) -> list[Version]:
    """Every version in the store, with lineage and metrics parsed here (a worker thread), so the
    UI thread never pays for JSON parsing."""
    with Store(root) as s:
        versions = s.list()
    for v in versions:
        _ = v.lineage, v.metrics, v.path
    return versions


def group(versions: list[Version], filters: Filters) -> list[AdapterRow]:
    by_name: dict[str, list[Version]] = {}
    totals: dict[str, int] = {}
    for v in versions:
        totals[v.name] = totals.get(v.name, 0) + 1
        if filters.matches(v):
            by_name.setdefault(v.name, []).append(v)
    return [AdapterRow(name, sorted(vs, key=lambda v: v.number), totals[name])
            for name, vs in sorted(by_name.items())]


def choices(versions: list[Version], attribute: str) -> list[str]:
    """The distinct values of ``base``, ``method`` or ``task`` across versions, for a filter."""
    return sorted({value for v in versions if (value := getattr(v, attribute))})


def refs_by_run(root: Path | str | None, run_ids: list[str]) -> dict[str, str]:
    """The stored version of each training run that has one (the store records run ids)."""
    wanted = set(run_ids)
    with Store(root) as s:
        return {v.run_id: v.ref for v in s.list() if v.run_id in wanted}


@dataclass
class Details:
    """The parts of a version the details pane shows."""

    summary: list[tuple[str, str]]
    lineage: list[tuple[str, str]]
    merge: list[tuple[str, str]]
    config: str
    metrics: list[tuple[str, str, str]]  # split, metric, value
    per_class: list[tuple[str, str, str, str, str, str]]  # split, class, P, R, F1, support
    files: list[tuple[str, str, str]]  # relpath, size, sha256 prefix
    extra: dict[str, Any] = field(default_factory=dict)


def details(v: Version) -> Details:
    lin = v.lineage if isinstance(v.lineage, dict) else {}
    summary = [("ref", v.ref), ("content id", v.short_digest + "…"), ("created", timestamp(v.created)),
               ("aliases", ", ".join(v.aliases) or "—"), ("parent", v.parent or "—"),
               ("run", v.run_id or "—"), ("size", human_size(v.size_bytes))]
    return Details(summary=summary, lineage=_lineage_rows(lin), merge=merge_rows(lin),
                   config=_config_text(v, lin), metrics=_metric_rows(v.metrics), per_class=_class_rows(v.metrics),
                   files=[(rel, human_size(f.get("size")), str(f.get("sha256", ""))[:12])
                          for rel, f in sorted(v.files.items())])


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _lineage_rows(lin: dict) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    base = lin.get("base")
    if isinstance(base, dict):
        rows.append(("base", str(base.get("id") or "")))
        if base.get("revision"):
            rows.append(("base revision", str(base["revision"])))
        if base.get("fingerprint"):
            rows.append(("base weights", str(base["fingerprint"])[:23] + "…"))
    elif base:
        rows.append(("base", str(base)))
    if lin.get("quant"):
        rows.append(("quantization", str(lin["quant"])))
    method = lin.get("method")
    if isinstance(method, dict):
        cfg = method.get("config") or {}
        keys = ("r", "alpha", "dropout", "target_modules", "num_virtual_tokens", "projection")
        shown = ", ".join(f"{k}={_short(cfg[k])}" for k in keys if k in cfg)
        rows.append(("method", f"{method.get('kind', '')} {shown}".strip()))
    task = lin.get("task")
    if isinstance(task, dict):
        labels = task.get("labels") or []
        rows.append(("task", str(task.get("kind") or "") + (f" ({', '.join(map(str, labels))})" if labels else "")))
    data = lin.get("data")
    if isinstance(data, dict):
        rows.append(("data", str(data.get("source") or "")))
        if data.get("fingerprint"):
            rows.append(("data fingerprint", str(data["fingerprint"])[:23]))
        if data.get("columns"):
            rows.append(("columns", ", ".join(f"{k}={v}" for k, v in data["columns"].items())))
        if data.get("sizes"):
            rows.append(("split sizes", ", ".join(f"{k} {v}" for k, v in data["sizes"].items())))
    if lin.get("parent"):
        rows.append(("trained from", str(lin["parent"])))
    libraries = lin.get("libraries")
    if isinstance(libraries, dict) and libraries:
        rows.append(("libraries", ", ".join(f"{k} {v}" for k, v in libraries.items())))
    return rows


def merge_rows(lin: dict) -> list[tuple[str, str]]:
    """A merged version's recipe: method, density and each parent with its weight."""
    merge = lin.get("merge") if isinstance(lin, dict) else None
    if not isinstance(merge, dict):
        return []
    rows = [("merge method", str(merge.get("method") or ""))]
    if merge.get("density") is not None:
        rows.append(("density", number(merge["density"])))
    parents = merge.get("parents") or []
    weights = merge.get("weights") or []
    for i, parent in enumerate(parents):
        # Each parent is {"ref", "digest", "weight"}; a bare ref with a separate weights list
        # is read too.
        if isinstance(parent, dict):
            ref, weight = parent.get("ref"), parent.get("weight")
        else:
            ref, weight = parent, weights[i] if i < len(weights) else None
        rows.append((f"parent {i + 1}", f"{ref}" + (f"  weight {number(weight)}" if weight is not None else "")))
    return rows


def _config_text(v: Version, lin: dict) -> str:
    """The resolved training config: the stored YAML file, else the lineage's copy."""
    if TRAINING_CONFIG_FILE in v.files:
        try:
            return (v.path / TRAINING_CONFIG_FILE).read_text(encoding="utf-8").rstrip()
        except OSError:
            pass
    training = lin.get("training")
    if isinstance(training, dict):
        import yaml

        return yaml.safe_dump(training, sort_keys=False).rstrip()
    return "(no training config recorded)"


def _metric_rows(metrics: dict) -> list[tuple[str, str, str]]:
    rows = []
    for split in ("dev", "test"):
        part = metrics.get(split) if isinstance(metrics, dict) else None
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append((split, key, number(value)))
    if not rows and isinstance(metrics, dict):
        rows = [("", k, number(v)) for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return rows


def _class_rows(metrics: dict) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for split in ("test", "dev"):
        part = metrics.get(split) if isinstance(metrics, dict) else None
        if not isinstance(part, dict):
            continue
        per = part.get("per_class") or part.get("per_type") or {}
        for name, m in per.items():
            if isinstance(m, dict):
                rows.append((split, str(name), number(m.get("precision")), number(m.get("recall")),
                             number(m.get("f1")), number(m.get("support"))))
        if rows:  # one split is enough: test when it exists
            break
    return rows


def diff_rows(diff: dict) -> list[tuple[str, str, str, str]]:
    """Store.diff's sections as rows (section, key, a, b): differing keys first, then one-sided."""
    rows = []
    for section, parts in diff.get("sections", {}).items():
        for key, (a, b) in parts.get("changed", {}).items():
            rows.append((section, key, _short(a), _short(b)))
        for key, a in parts.get("only_a", {}).items():
            rows.append((section, key, _short(a), "—"))
        for key, b in parts.get("only_b", {}).items():
            rows.append((section, key, "—", _short(b)))
    return rows


def _short(value: Any, width: int = 48) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"  # metrics computed as sums carry float noise (0.8320000000000001)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"
