"""What the Sweeps view shows and launches, without Textual: the sweeps of the store's default
study storage and one sweep's trials (read through adapters.experiments.sweep, which loads
pydantic, optuna and sqlalchemy: call ``read_sweeps`` from a worker), the objective by trial with
the best so far, and ``adapters sweep`` as a child process.

A trial's state comes from Optuna (RUNNING, COMPLETE, PRUNED, FAIL, WAITING); the view names them
as the Train tab names runs, so the same words and colours mean the same thing."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters_tui.runs import CliProcess, Outcome

if TYPE_CHECKING:
    from adapters.experiments.sweep import SweepResult, TrialRow

STATES = {"RUNNING": "running", "COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "WAITING": "waiting"}
SPACE_EXAMPLE = "lora.r: [4, 8, 16]  or  training.learning_rate: {log_uniform: [1.0e-4, 3.0e-2]}"


def state_name(row: TrialRow) -> str:
    return STATES.get(row.state, row.state.lower())


@dataclass
class SweepsSnapshot:
    """One read of the storage: every sweep (id, trials), newest first, and the one asked for."""

    sweeps: list[tuple[str, int]]
    shown: SweepResult | None = None
    error: str | None = None
    pruners: tuple[str, ...] = ()


def read_sweeps(store_root: Path, sweep_id: str | None) -> SweepsSnapshot:
    """The sweeps in the store's default storage and ``sweep_id``'s trials (else the newest
    sweep's). A store with no sweeps database yet has no sweeps: it is not created by looking."""
    from adapters.errors import UsageError
    from adapters.experiments import sweep as S

    pruners = tuple(S.PRUNERS)
    # list_sweeps answers in the order the studies were made: the newest is what one looks at.
    sweeps = list(reversed(S.list_sweeps(store_root=store_root)))
    ids = [sid for sid, _ in sweeps]
    wanted = sweep_id if sweep_id in ids else (ids[0] if ids else None)
    if wanted is None:
        return SweepsSnapshot(sweeps, pruners=pruners)
    try:
        return SweepsSnapshot(sweeps, S.load_sweep(wanted, store_root=store_root), pruners=pruners)
    except UsageError as exc:  # removed between the list and the load
        return SweepsSnapshot(sweeps, error=exc.message, pruners=pruners)


@dataclass
class Series:
    """The plot's data: each finished trial's objective by trial number, and the best so far
    after each of them (the running max or min, by the sweep's direction)."""

    trials: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)


def objective_series(trials: list[TrialRow], direction: str) -> Series:
    series = Series()
    pick = max if direction == "maximize" else min
    for row in sorted(trials, key=lambda r: r.number):
        if row.state != "COMPLETE" or row.value is None:
            continue  # pruned and failed trials have no objective
        series.trials.append(row.number)
        series.values.append(float(row.value))
        series.best.append(pick(series.best[-1], float(row.value)) if series.best else float(row.value))
    return series


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# ---- starting a sweep -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepRequest:
    config: Path
    space: Path
    trials: int
    pruner: str
    workers: int = 1


def _count(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{what} must be a whole number, not {text.strip()!r}") from None
    if value < 1:
        raise ValueError(f"{what} must be at least 1, not {value}")
    return value


def check_space_file(text: str) -> Path:
    """The space file named by ``text``, refused with a message that says what to give when it
    is missing, empty or not a mapping of config keys. Whether each key and value fits the config
    is checked by ``adapters sweep`` itself (with its "did you mean")."""
    import yaml

    if not text.strip():
        raise ValueError(f"give a space file: YAML that maps config keys to values to try, e.g. {SPACE_EXAMPLE}")
    path = Path(text.strip()).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"there is no space file {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"the space file {path} is not readable YAML: {str(exc).splitlines()[0]}") from None
    if raw is None or raw == {}:
        raise ValueError(f"the space file {path} is empty: map config keys to values to try, e.g. {SPACE_EXAMPLE}")
    if not isinstance(raw, dict):
        raise ValueError(f"the space file {path} must map config keys to values to try, e.g. {SPACE_EXAMPLE}")
    return path


def parse_request(config: Path | None, config_text: str, space_text: str, trials: str, pruner: str,
                  workers: str) -> SweepRequest:
    """The start dialog's entries as a request; ValueError says what is wrong with them. A config
    file typed in wins over the one picked in the list."""
    if config_text.strip():
        config = Path(config_text.strip()).expanduser().resolve()
        if not config.is_file():
            raise ValueError(f"there is no config file {config}")
    if config is None:
        raise ValueError("pick a config, or type the path of a config file")
    space = check_space_file(space_text)
    return SweepRequest(Path(config), space, _count(trials, "trials"), pruner, _count(workers, "workers"))


def sweep_command(request: SweepRequest, store_root: Path | None) -> list[str]:
    """``adapters sweep`` as a child process of this Python (the same environment); ``--json``
    makes its last line the sweep's result (its id among it)."""
    cmd = [sys.executable, "-m", "adapters", "sweep", str(request.config), "--space", str(request.space),
           "--trials", str(request.trials), "--pruner", request.pruner, "--workers", str(request.workers)]
    if store_root is not None:
        cmd += ["--store", str(store_root)]
    return cmd + ["--quiet", "--json"]


class SweepProcess(CliProcess):
    """One ``adapters sweep`` child process. Its trials log their runs like any training; the
    sweep itself has no log but its study."""

    def __init__(self, command: list[str], known: set[str]):
        super().__init__(command)
        self.known = set(known)  # the sweeps there were before it started: a new one is its own
        self.sweep_id: str | None = None

    def wait(self) -> Outcome:
        outcome = super().wait()
        if outcome.result:
            self.sweep_id = outcome.result.get("id") or self.sweep_id
        return outcome
