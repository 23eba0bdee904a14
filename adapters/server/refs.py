"""Adapters are named by store ref over HTTP, never by a filesystem path."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

_PATHLIKE = re.compile(r"[/\\]|^[.~]|^[A-Za-z]:")


def looks_like_path(value: str) -> bool:
    """Store refs never hold a slash or start with '.' or '~'; filesystem paths usually do."""
    return bool(_PATHLIKE.search(value))


def store_resolver(store_root: str | Path | None = None) -> Callable[[str], Path]:
    """The server's resolver: a store ref -> its (re-hashed) directory; a path is refused."""
    from adapters_store import Store
    from adapters_store.errors import RefNotFound

    def resolve(ref: str) -> Path:
        if looks_like_path(ref):
            raise RefNotFound(f"'{ref}' looks like a path; the server serves store refs only",
                              "store it first (`adapters import`) and use its ref")
        with Store(store_root) as s:
            return s.check(ref).path

    return resolve
