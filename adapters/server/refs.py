"""Adapters are named by store ref over HTTP, never by a filesystem path."""

from __future__ import annotations

import re

_PATHLIKE = re.compile(r"[/\\]|^[.~]|^[A-Za-z]:")


def looks_like_path(value: str) -> bool:
    """Store refs never hold a slash or start with '.' or '~'; filesystem paths usually do."""
    return bool(_PATHLIKE.search(value))
