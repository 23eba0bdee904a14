"""Refs -> adapter directories: what the engine calls to find an adapter's files before a load.

A resolver takes a ref and returns a directory holding ``adapter_config.json``, or raises
``UnknownAdapterError`` (a ``LookupError``). Store refs are re-hashed before their directory is
handed out, so a damaged adapter is refused naming the file instead of loading wrong weights.
No torch here: the server's app and the CLI build resolvers before the engine exists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from adapters.artifact import CONFIG_FILE
from adapters.errors import UsageError

Resolver = Callable[[str], Path]


class UnknownAdapterError(UsageError, LookupError):
    """A ref that names no adapter (not in the store, not a directory)."""


def directory_resolver(ref: str) -> Path:
    """A resolver for refs that are adapter directories only."""
    path = Path(ref).expanduser()
    if not (path / CONFIG_FILE).is_file():
        raise UnknownAdapterError(f"unknown adapter '{ref}'", "pass an adapter directory or a store ref")
    return path


def store_resolver(store_root: str | Path | None = None, *, allow_paths: bool = False) -> Resolver:
    """Store refs (the store at ``store_root``, default ``$ADAPTERS_HOME``) -> their re-hashed
    directories. ``allow_paths`` also takes an adapter directory's path, as the Python API does;
    the HTTP server refuses paths, so a client can only name what the store holds."""
    from adapters_store import Store
    from adapters_store.errors import InvalidName, RefNotFound

    def resolve(ref: str) -> Path:
        if allow_paths and Path(ref).expanduser().is_dir():
            return Path(ref).expanduser()
        try:
            # A path is no store ref: the store refuses it (InvalidName) without touching the disk.
            with Store(store_root, create=False) as s:  # reading: a mistyped store is not made here
                return s.check(ref).path
        except (RefNotFound, InvalidName) as exc:
            raise UnknownAdapterError(exc.message, exc.hint) from None

    return resolve
