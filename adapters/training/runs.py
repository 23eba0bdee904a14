"""Training runs on disk: where they live (``runs_dir``, under the store root $ADAPTERS_HOME) and
the JSONL event log of each, one JSON object a line, flushed as written, so the TUI and any other
tool can tail it while the run goes on."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


def home(store_root: Path | None = None) -> Path:
    from adapters_store import default_root

    return Path(store_root) if store_root else default_root()


def runs_dir(store_root: Path | None = None) -> Path:
    return home(store_root) / "runs"


class RunLog:
    """``callback``, if given, gets each event as written (the same dict as the log's line)."""

    def __init__(self, path: Path, callback: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.callback = callback

    def write(self, event: str, **fields) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
        if self.callback is not None:
            self.callback(record)


def read_events(path: Path) -> list[dict]:
    """Every complete event in a log; a torn last line (a run still writing) is skipped."""
    events = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return events
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "adapter-manager"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions
