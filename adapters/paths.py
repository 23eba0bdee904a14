"""Where things live on disk: the store root ($ADAPTERS_HOME) and the training runs under it."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    env = os.environ.get("ADAPTERS_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("adapters"))


def runs_dir(root: Path | None = None) -> Path:
    return (root or home()) / "runs"
