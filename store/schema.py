"""The SQLite index: connection settings and ``PRAGMA user_version`` migrations.

Each entry of MIGRATIONS moves the schema one version up; never edit a released entry, append.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from adapters_store.errors import StoreVersionError

MIGRATIONS: list[list[str]] = [
    # 1: adapters (per-name counter, never decremented), versions, aliases, files
    [
        """CREATE TABLE adapters (
            name TEXT PRIMARY KEY,
            next_number INTEGER NOT NULL DEFAULT 1,
            created TEXT NOT NULL
        )""",
        """CREATE TABLE versions (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL REFERENCES adapters(name),
            number INTEGER NOT NULL,
            digest TEXT NOT NULL,
            created TEXT NOT NULL,
            parent TEXT,
            parent_digest TEXT,
            run_id TEXT,
            base TEXT,
            method TEXT,
            task TEXT,
            lineage TEXT NOT NULL DEFAULT '{}',
            metrics TEXT NOT NULL DEFAULT '{}',
            size_bytes INTEGER NOT NULL DEFAULT 0,
            UNIQUE (name, number)
        )""",
        "CREATE INDEX versions_digest ON versions(digest)",
        "CREATE INDEX versions_base ON versions(base)",
        "CREATE INDEX versions_method ON versions(method)",
        "CREATE INDEX versions_task ON versions(task)",
        "CREATE INDEX versions_run ON versions(run_id)",
        """CREATE TABLE aliases (
            name TEXT NOT NULL,
            alias TEXT NOT NULL,
            version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
            updated TEXT NOT NULL,
            PRIMARY KEY (name, alias)
        )""",
        "CREATE INDEX aliases_version ON aliases(version_id)",
        """CREATE TABLE files (
            version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
            relpath TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (version_id, relpath)
        ) WITHOUT ROWID""",
        "CREATE INDEX files_sha ON files(sha256)",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path, *, durable: bool = True) -> sqlite3.Connection:
    """Open the index in WAL mode and bring its schema up to date."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn, path)
    return conn


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current == SCHEMA_VERSION:
        return
    if current > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the store index {path} has schema version {current}, this release knows up to "
            f"{SCHEMA_VERSION}",
            hint="upgrade adapter-manager, or point --store / $ADAPTERS_HOME at another store",
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
        for number in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
