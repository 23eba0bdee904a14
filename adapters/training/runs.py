"""Training runs on disk: where they live (``runs_dir``, under the store root $ADAPTERS_HOME), how
a run directory is named (``new_run_id``), and the JSONL event log of each (``EVENTS_FILE``), one
JSON object a line, flushed as written, so the TUI and any other tool can tail it while the run
goes on. The CLI, the API and the TUI all name and find runs through here, so a run started from
one is found by the others (``--resume`` of a run the TUI launched, for one)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

EVENTS_FILE = "events.jsonl"
# A run id: a local timestamp (so ids sort by start time), the adapter name (which may contain
# dashes), and 6 hex digits that keep two runs started in the same second apart.
RUN_ID = re.compile(r"\d{8}-\d{6}-(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)-[0-9a-f]{6}")


def home(store_root: Path | None = None) -> Path:
    from adapters_store import default_root

    return Path(store_root) if store_root else default_root()


def runs_dir(store_root: Path | None = None) -> Path:
    return home(store_root) / "runs"


def new_run_id(name: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{name}-{uuid.uuid4().hex[:6]}"


def run_name(run_dir: Path, events: list[dict]) -> str | None:
    """The adapter name a run trains: its start event's, else the one in its id; None for a
    directory not named like a run."""
    for event in events:
        if event.get("event") == "start" and event.get("name"):
            return str(event["name"])
    match = RUN_ID.fullmatch(Path(run_dir).name)
    return match.group("name") if match else None


# How a run's log ends when there is nothing left to resume: it finished, or a sweep's pruner
# stopped it on purpose. ("failed" and "cancelled" runs resume from their last checkpoint.)
DONE = ("finished", "pruned")


def latest_unfinished_run(name: str, store_root: Path | None = None) -> Path | None:
    """The newest run of ``name`` with a checkpoint that did not finish: killed, cancelled, or
    failed mid-run (its log's last ``end`` says so). A run refused for bad input left no directory.
    Names may hold dashes, so a run id is matched on its whole name, never as a substring: ``sig``
    must not pick up a run of ``sig-int``."""
    # Newest first: run ids start with their start time.
    for run in sorted(runs_dir(store_root).glob(f"*-{name}-*"), reverse=True):
        events = read_events(run / EVENTS_FILE)
        if run_name(run, events) != name:
            continue
        ends = [e for e in events if e.get("event") == "end"]
        if latest_checkpoint(run) is not None and not (ends and ends[-1].get("status") in DONE):
            return run
    return None


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


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The run's last whole checkpoint directory, or None. ``checkpoint.old`` counts when
    ``checkpoint`` is missing: a run killed between save_checkpoint's two renames left it there."""
    for name in ("checkpoint", "checkpoint.old"):
        path = Path(run_dir) / name
        if (path / "trainer.json").is_file() and (path / "state.pt").is_file():
            return path
    return None
