"""Telling a filesystem path from a name where a value may be either (a base, a data source, an
adapter): names never start with '/', '.' or '~' and hold no backslash or drive letter ('C:').
Store refs hold no slash at all; hub ids are ``name`` or ``org/name``, so where a hub id is
accepted one inner slash still reads as a name. A milliseconds check, no filesystem access, so a
mistyped path is reported before any model code loads."""

from __future__ import annotations

import re
from pathlib import PurePath

_PATH_MARKS = re.compile(r"\\|^[/.~]|^[A-Za-z]:")


def looks_like_path(value: str, *, hub_ids: bool = False) -> bool:
    """Whether ``value`` is meant as a path. ``hub_ids``: the value may also be a hub id, whose one
    inner slash (``org/name``) does not make it a path."""
    if _PATH_MARKS.search(value):
        return True
    return value.count("/") > (1 if hub_ids else 0)


def looks_like_local_source(source: str) -> bool:
    """A data source meant as a local file or folder: a path, or a file name (hub data sets are
    named ``name`` or ``org/name``, with no file extension)."""
    return looks_like_path(source, hub_ids=True) or bool(PurePath(source).suffix)
