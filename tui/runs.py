"""Training runs seen through their JSONL event logs, and training launched as a subprocess.

A run is a directory under ``<store>/runs/`` holding ``events.jsonl`` (see adapters/training/runs.py):
``start``, ``step``, ``eval``, ``checkpoint`` and ``end`` events. Runs the TUI starts and runs
started from the CLI look the same on disk, so both are watched the same way: by tailing the log.
A run refused for bad input leaves no directory, so it is never listed; one that failed after it
started ends its log with ``end`` (``status: failed``) and is listed as failed; one whose process
died without an ``end`` (SIGKILL, out of memory) is listed as failed too, once its ``start``
event's pid is gone from this host. No Textual and no torch here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from adapters.training.runs import EVENTS_FILE, RunLog, new_run_id, read_events

# A run with no ``end`` event whose log has been silent this long is shown as stalled: its process
# was probably killed (SIGKILL leaves no end event). It turns back to running if the log moves.
STALL_AFTER_S = 600.0
FINAL = ("finished", "failed", "cancelled", "pruned")


@dataclass
class RunState:
    """Everything the Train screen shows about one run, folded from its events."""

    run_id: str
    run_dir: Path
    name: str | None = None
    status: str = "starting"  # starting | running | finished | failed | cancelled | pruned
    step: int = 0
    total_steps: int | None = None
    steps_per_epoch: int | None = None
    epoch: float = 0.0
    started: float | None = None
    last_time: float | None = None  # of any event: is the log still moving?
    last_step_time: float | None = None  # of the last step: the training pace
    ended: float | None = None
    tokens_per_s: float | None = None
    learning_rate: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)  # {"split", "step", "metrics"}
    error: str | None = None
    hint: str | None = None
    ref: str | None = None  # the stored version, once known
    owned: bool = False  # launched by this TUI (so it can be cancelled)
    resumed_from: int | None = None
    device: str | None = None
    pid: int | None = None  # of the process that logged the last ``start``, on ``host``
    host: str | None = None

    def apply(self, event: dict) -> None:
        kind = event.get("event")
        when = event.get("time")
        if isinstance(when, (int, float)):
            self.last_time = float(when)
        if kind == "start":
            self.status = "running"
            self.name = event.get("name") or self.name
            self.total_steps = event.get("total_steps")
            self.steps_per_epoch = event.get("steps_per_epoch")
            self.resumed_from = event.get("resumed_from")
            self.step = int(self.resumed_from or 0)
            self.device = event.get("device")
            self.pid, self.host = event.get("pid"), event.get("host")
            self.started = self.last_time
            self.ended = self.error = None  # a resumed run is running again
        elif kind == "step":
            self.status = "running"
            self.last_step_time = self.last_time
            self.step = int(event.get("step", self.step))
            self.epoch = float(event.get("epoch", self.epoch))
            if isinstance(event.get("loss"), (int, float)):
                self.losses.append((self.step, float(event["loss"])))
            self.tokens_per_s = event.get("tokens_per_s", self.tokens_per_s)
            self.learning_rate = event.get("lr", self.learning_rate)
        elif kind == "eval":
            self.evals.append({"split": event.get("split"), "step": event.get("step"),
                               "metrics": event.get("metrics") or {}})
        elif kind == "end":
            self.status = str(event.get("status") or "finished")
            self.ended = self.last_time
            self.error = event.get("error")
            self.name = self.name or event.get("name")  # a run that failed while loading logs only its end

    def process_gone(self) -> bool:
        """Whether the process that logged ``start`` is known to have exited (same host only)."""
        if not isinstance(self.pid, int) or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OSError):
            return False
        return False

    def display_status(self, now: float) -> str:
        if self.status in FINAL or self.last_time is None:
            return self.status
        return "stalled" if now - self.last_time > STALL_AFTER_S else self.status

    def fraction(self) -> float:
        if not self.total_steps:
            return 0.0
        return min(1.0, self.step / self.total_steps)

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended or now) - self.started

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace of the steps so far (resumed steps excluded)."""
        if self.status != "running" or not self.total_steps or self.started is None or self.last_step_time is None:
            return None
        done = self.step - int(self.resumed_from or 0)
        if done <= 0:
            return None
        per_step = (self.last_step_time - self.started) / done
        return max(0.0, (self.total_steps - self.step) * per_step)

    def dev_history(self) -> list[tuple[int, dict]]:
        return [(int(e["step"] or 0), e["metrics"]) for e in self.evals if e["split"] == "dev"]

    def latest_eval(self) -> dict | None:
        return self.evals[-1] if self.evals else None


class LogTail:
    """Reads the events appended to a log since the last call; a torn last line waits for more."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.pending = b""

    def grew(self) -> bool:
        """Whether the log has bytes not read yet (a stat, no read)."""
        try:
            return self.path.stat().st_size > self.offset
        except FileNotFoundError:
            return False

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self.pending + chunk
        lines = data.split(b"\n")
        self.pending = lines.pop()  # b"" after a complete line
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


class RunWatcher:
    """Every run under a runs directory, kept current by tailing each log that may still grow.

    ``find_versions`` (run ids -> {run id: stored ref}) names the version a finished run stored:
    the CLI stores it just after logging ``end``, so a run is looked up on a few polls after that.
    Runs launched here (``owned``) learn their ref from the process instead."""

    def __init__(self, runs_dir: Path, find_versions=None, lookups: int = 60):
        self.runs_dir = Path(runs_dir)
        self.runs: dict[str, RunState] = {}
        self.find_versions = find_versions
        self.lookups = lookups
        self._tails: dict[str, LogTail] = {}
        self._pending: dict[str, int] = {}  # run id -> lookups left
        self._lock = threading.Lock()

    def track(self, run_dir: Path, owned: bool = False) -> RunState:
        run_dir = Path(run_dir)
        with self._lock:
            run = self.runs.get(run_dir.name)
            if run is None:
                run = self.runs[run_dir.name] = RunState(run_dir.name, run_dir)
                self._tails[run_dir.name] = LogTail(run_dir / EVENTS_FILE)
            run.owned = run.owned or owned
            return run

    def poll(self) -> list[RunState]:
        """Discover new runs and read new events; returns the runs that changed. A poll already
        under way (another thread) makes this one return nothing."""
        if not self._lock.acquire(blocking=False):
            return []
        try:
            return self._poll()
        finally:
            self._lock.release()

    def _poll(self) -> list[RunState]:
        if self.runs_dir.is_dir():
            for entry in sorted(self.runs_dir.iterdir()):
                if entry.name not in self.runs and (entry / EVENTS_FILE).is_file():
                    self.runs[entry.name] = RunState(entry.name, entry)
                    self._tails[entry.name] = LogTail(entry / EVENTS_FILE)
        changed: dict[str, RunState] = {}
        for run_id, tail in self._tails.items():
            run = self.runs[run_id]
            if run.status in FINAL and run.ended is not None and not tail.grew():
                continue  # ended; read again only if it grows (``--resume`` appends to the same log)
            events = tail.poll()
            for event in events:
                run.apply(event)
            if run.status not in FINAL and run.process_gone():
                # Gone without an ``end``: read what it wrote before it exited, then call it failed.
                for event in tail.poll():
                    run.apply(event)
                if run.status not in FINAL:
                    run.status, run.ended = "failed", run.last_time
                    run.error = (f"the training process (pid {run.pid}) exited without logging its end "
                                 "(killed?); adapters train --resume continues from its last checkpoint")
                changed[run_id] = run
            if events:
                changed[run_id] = run
                if run.status == "finished" and not run.owned and run.ref is None:
                    self._pending[run_id] = self.lookups
        if self._pending and self.find_versions is not None:
            found = self.find_versions(list(self._pending))
            for run_id in list(self._pending):
                if found.get(run_id):
                    self.runs[run_id].ref = found[run_id]
                    changed[run_id] = self.runs[run_id]
                    del self._pending[run_id]
                elif self._pending[run_id] <= 1:
                    del self._pending[run_id]
                else:
                    self._pending[run_id] -= 1
        return list(changed.values())


def new_run_dir(runs_dir: Path, name: str, now: float | None = None) -> Path:
    """A fresh run directory named like the CLI's, so ``--resume`` finds it."""
    return Path(runs_dir) / new_run_id(name, now)


def train_command(config: Path, overrides: list[str], run_dir: Path, store_root: Path | None) -> list[str]:
    """``adapters train`` as a child process of this Python (the same environment)."""
    cmd = [sys.executable, "-m", "adapters", "train", str(config)]
    for item in overrides:
        cmd += ["--set", item]
    cmd += ["--run-dir", str(run_dir), "--quiet", "--json"]
    if store_root is not None:
        cmd += ["--store", str(store_root)]
    return cmd


def parse_cli_error(stderr: str) -> tuple[str, str | None]:
    """The ``error: ...`` and ``hint: ...`` lines the CLI prints, else the last lines of stderr."""
    message, hint = None, None
    for line in stderr.splitlines():
        if line.startswith("error: "):
            message = line[len("error: "):]
        elif line.startswith("hint: ") and message is not None:
            hint = line[len("hint: "):]
    if message is None:
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
        message = " / ".join(tail) or "the training process exited with an error"
    return message, hint


@dataclass
class Outcome:
    returncode: int
    result: dict | None  # the CLI's --json result on success
    error: str | None
    hint: str | None


class CliProcess:
    """One ``adapters`` child process: started, waited on (from a worker), cancelled. In its own
    process group, so a Ctrl+C meant for the terminal does not reach it, and a cancel reaches
    whatever it started itself (a sweep's workers, say)."""

    def __init__(self, command: list[str]):
        self.command = command
        self.process: subprocess.Popen | None = None
        self.cancelled = False

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env,
                                        start_new_session=os.name == "posix")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> Outcome:
        assert self.process is not None
        stdout, stderr = self.process.communicate()
        code = self.process.returncode
        if code == 0:  # with --json, the last line that is a JSON object is the command's result
            for line in reversed(stdout.strip().splitlines()):
                try:
                    result = json.loads(line)
                except ValueError:
                    continue
                if isinstance(result, dict):
                    return Outcome(code, result, None, None)
            return Outcome(code, None, None, None)
        if self.cancelled:
            return Outcome(code, None, "cancelled", None)
        message, hint = parse_cli_error(stderr)
        self._failed(message if code > 0 else f"killed by signal {-code}: {message}")
        return Outcome(code, None, message, hint)

    def cancel(self, grace_s: float = 10.0) -> None:
        """Interrupt like Ctrl+C (a run logs ``end: cancelled``); kill if it lingers."""
        if not self.running:
            return
        self.cancelled = True
        assert self.process is not None
        try:
            self._signal(signal.SIGINT if os.name == "posix" else signal.SIGTERM)
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
            self.process.wait()
            self._killed(grace_s)

    def _failed(self, error: str) -> None:
        """Called when the process ended with an error (not cancelled)."""

    def _killed(self, grace_s: float) -> None:
        """Called when a cancel had to kill the process."""

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        try:
            if os.name == "posix":
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)
        except ProcessLookupError:  # it ended meanwhile
            pass


class TrainingProcess(CliProcess):
    """One ``adapters train`` child process; its run log is made final however it ends."""

    def __init__(self, command: list[str], run_dir: Path):
        super().__init__(command)
        self.run_dir = Path(run_dir)

    def start(self) -> None:
        # The run directory is the trainer's to create: one refused for bad input leaves none.
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        super().start()

    def _failed(self, error: str) -> None:
        self._end_log("failed", error)

    def _killed(self, grace_s: float) -> None:
        # Killed, it could not log its end; record it so the log (and every reader) is final.
        events = read_events(self.run_dir / EVENTS_FILE)
        if not events or events[-1].get("event") != "end":
            RunLog(self.run_dir / EVENTS_FILE).write(
                "end", status="cancelled", error=f"killed: no answer to the interrupt within {grace_s:g} s")

    def _end_log(self, status: str, error: str) -> None:
        """A run that started (it has a log) but died before logging its ``end`` gets one, so the
        log, and every reader of it, is final. A run refused for bad input has no log: none is made."""
        path = self.run_dir / EVENTS_FILE
        if not path.is_file():
            return
        events = read_events(path)
        if events and events[-1].get("event") != "end":
            RunLog(path).write("end", status=status, error=error)
