"""Read queries on the index: resolving refs and turning rows into Version objects."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from adapters_store.errors import AmbiguousRef, RefNotFound
from adapters_store.model import Version
from adapters_store.refs import LATEST, ParsedRef

VERSION_COLUMNS = ("id", "name", "number", "digest", "created", "parent", "run_id", "lineage",
                   "metrics")


def prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in VERSION_COLUMNS)


def resolve_row(db: sqlite3.Connection, p: ParsedRef, root: Path) -> sqlite3.Row:
    """The versions row a parsed ref names; RefNotFound / AmbiguousRef otherwise."""
    cols = prefixed("v")
    if p.digest_prefix is not None:
        low = "sha256:" + p.digest_prefix
        digests = [r[0] for r in db.execute(
            "SELECT DISTINCT digest FROM versions WHERE digest >= ? AND digest < ? LIMIT 6",
            (low, low + "~"))]
        if not digests:
            raise RefNotFound(f"no version has a content id starting with {low}",
                              hint="see `adapters list` for content ids")
        if len(digests) > 1:
            raise AmbiguousRef(
                f"{p.text} matches {len(digests)} content ids: "
                + ", ".join(d[:23] + "…" for d in digests[:5]),
                hint="give more hex digits")
        # identical content stored several times: the newest version carrying it
        return db.execute(f"SELECT {cols} FROM versions v WHERE v.digest = ?"
                          " ORDER BY v.id DESC LIMIT 1", (digests[0],)).fetchone()
    if p.number is not None:
        row = db.execute(f"SELECT {cols} FROM versions v WHERE v.name = ? AND v.number = ?",
                         (p.name, p.number)).fetchone()
    elif p.alias == LATEST:
        row = db.execute(f"SELECT {cols} FROM versions v WHERE v.name = ?"
                         " ORDER BY v.number DESC LIMIT 1", (p.name,)).fetchone()
    else:
        row = db.execute(f"SELECT {cols} FROM aliases a JOIN versions v ON v.id = a.version_id"
                         " WHERE a.name = ? AND a.alias = ?", (p.name, p.alias)).fetchone()
    if row is not None:
        return row
    numbers = [r[0] for r in db.execute(
        "SELECT number FROM versions WHERE name = ? ORDER BY number", (p.name,))]
    if not numbers:
        raise RefNotFound(f"no adapter named {p.name!r} in the store {root}",
                          hint="see `adapters list`, or pass --store for another store")
    if p.number is not None:
        shown = ", ".join(map(str, numbers[-10:]))
        raise RefNotFound(f"{p.name} has no version {p.number}",
                          hint=f"its versions: {shown} (or use {p.name}@latest)")
    raise RefNotFound(f"{p.name} has no alias {p.alias!r}", hint=alias_hint(db, p.name))


def alias_hint(db: sqlite3.Connection, name: str) -> str:
    aliases = [r[0] for r in db.execute(
        "SELECT alias FROM aliases WHERE name = ? ORDER BY alias", (name,))]
    if aliases:
        return f"{name} has the aliases: {', '.join(aliases)} (and latest)"
    return f"{name} has no aliases yet; tag one with `adapters tag {name}@N ALIAS`"


def load_versions(db: sqlite3.Connection, rows: list[sqlite3.Row], versions_dir: Path, *,
                  subset: str | None = None, args: list | None = None) -> list[Version]:
    if not rows:
        return []
    if subset is None and len(rows) <= 500:
        ids = [r[0] for r in rows]
        subset, args = ",".join("?" * len(ids)), ids
    files: dict[int, dict[str, dict]] = {}
    aliases: dict[int, list[str]] = {}
    fq = "SELECT version_id, relpath, sha256, size FROM files"
    aq = "SELECT version_id, alias FROM aliases"
    if subset is not None:
        fq += f" WHERE version_id IN ({subset})"
        aq += f" WHERE version_id IN ({subset})"
    for vid, rel, sha, size in db.execute(fq, args or []):
        files.setdefault(vid, {})[rel] = {"sha256": sha, "size": size}
    for vid, alias in db.execute(aq + " ORDER BY alias", args or []):
        aliases.setdefault(vid, []).append(alias)
    # positional access, and JSON / Path built on first use (Version._from_row): list() of
    # 10,000 versions stays well under its 300 ms budget
    root, make, out = str(versions_dir), Version._from_row, []
    for vid, name, number, digest, created, parent, run_id, lineage, metrics in rows:
        out.append(make(name, number, digest, created, aliases.get(vid, []), parent, run_id,
                        lineage, metrics, files.get(vid, {}), root))
    return out
