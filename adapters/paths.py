"""Where things live on disk: the store root ($ADAPTERS_HOME) and the training runs under it."""

from __future__ import annotations

from pathlib import Path


def home(store_root: Path | None = None) -> Path:
    from adapters_store import default_root

    return Path(store_root) if store_root else default_root()


def runs_dir(store_root: Path | None = None) -> Path:
    return home(store_root) / "runs"
