"""Hyper-parameter sweeps on Optuna: every finished trial a stored version.

A sweep is an Optuna study. Its space is YAML over any config key::

    training.learning_rate: {log_uniform: [1.0e-4, 3.0e-2]}
    lora.r: [4, 8, 16]                     # a list: one of these
    method: [lora, prefix]
    prefix.num_virtual_tokens: {int: [8, 32]}
    training.warmup_ratio: {uniform: [0.0, 0.2]}

Each trial trains the config with its sampled values through ``adapters.train``; the objective is
a dev-split metric (never test). The trainer's dev evaluations feed the pruner, so a trial that
falls behind stops early (its run log ends "pruned", nothing is stored). A finished trial is
stored as a version of the config's name, its lineage holding the sweep id, the trial number, the
sampled values and the objective, and ``NAME@best`` moves to it when it is the sweep's best.

The study lives in an Optuna storage (by default SQLite in the store's home; any RDB URL such as
``postgresql+psycopg://...`` for workers on several machines) under a name derived from the config,
the space and the objective: running the same sweep again continues it, and workers started with
the same arguments join it. ``trials`` counts finished and pruned trials over all runs and workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adapters.config import TrainConfig, apply_overrides, read_yaml, to_yaml, validate
from adapters.errors import ConfigError, UsageError

RANGES = ("uniform", "log_uniform", "int", "log_int")  # {kind: [low, high]}; a list is a choice
PRUNERS = ("median", "halving", "hyperband", "none")
SWEEPS_DB = "sweeps.db"


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a config key and what values it may take."""

    key: str  # a config path, "training.learning_rate"
    kind: str  # "choice" or one of RANGES
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.kind == "log_int")
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step,
                                   log=self.kind == "log_uniform")

    def extremes(self) -> list:
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def with_values(config: TrainConfig, values: dict[str, Any], source: str = "the sweep") -> TrainConfig:
    """``config`` with each dotted key set to its value, validated like a ``--set`` override."""
    overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    return validate(apply_overrides(config.model_dump(mode="json"), overrides), source)


def parse_space(raw: Any, config: TrainConfig, source: str = "the space") -> list[Param]:
    """The space's parameters, each checked against the config schema: a key that is not a config
    key gets the config's own "did you mean", and every choice and both ends of every range must
    give a valid config."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source} must map config keys to values to try",
                          "example: training.learning_rate: {log_uniform: [1.0e-4, 3.0e-2]}")
    params = []
    for key, spec in raw.items():
        params.append(_param(str(key), spec, source))
    for param in params:
        for value in param.extremes():
            with_values(config, {param.key: value}, f"{source} ({param.key}: {value!r})")
    return params


def _param(key: str, spec: Any, source: str) -> Param:
    example = f"{key}: {{log_uniform: [1.0e-4, 3.0e-2]}} or {key}: [4, 8, 16]"
    if isinstance(spec, list):
        if not spec or len(set(map(json.dumps, spec))) != len(spec):
            raise ConfigError(f"{source}: {key} lists no values, or one twice", f"give distinct values: {example}")
        return Param(key, "choice", choices=tuple(spec))
    if isinstance(spec, dict) and len(spec.keys() - {"step"}) == 1:
        (kind,) = spec.keys() - {"step"}
        bounds = spec[kind]
        if kind in RANGES and isinstance(bounds, list) and len(bounds) == 2 \
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
            low, high = bounds
            if not low < high:
                raise ConfigError(f"{source}: {key} has low {low} >= high {high}", "give [low, high] with low < high")
            if kind.startswith("log") and low <= 0:
                raise ConfigError(f"{source}: {key} is {kind} from {low}", "a log range starts above 0")
            if kind in ("int", "log_int") and not all(float(b).is_integer() for b in bounds):
                raise ConfigError(f"{source}: {key} is an int range over {bounds}", "give whole numbers")
            return Param(key, kind, low=low, high=high, step=spec.get("step"))
        if kind not in RANGES:
            raise ConfigError(f"{source}: {key} has an unknown range '{kind}'",
                              f"use a list of values or one of {', '.join(RANGES)}: {example}")
    raise ConfigError(f"{source}: {key} is not a list of values or a range", example)


def read_space(path: str | Path, config: TrainConfig) -> tuple[list[Param], dict]:
    raw = read_yaml(path)
    return parse_space(raw, config, str(path)), raw


def objective_metric(config: TrainConfig, metric: str | None) -> tuple[str, str]:
    """The dev metric a sweep optimizes and its direction ("maximize" or "minimize"): ``metric``,
    else the config's early-stopping metric, else the task's headline one."""
    from adapters.evaluation.metrics import METRIC_DIRECTIONS
    from adapters.tasks import TASKS

    task = TASKS[config.task]
    stopping = config.training.early_stopping
    metric = metric or (stopping.metric if stopping else task.default_metric)
    if metric not in task.stopping_metrics:
        raise UsageError(f"the metric '{metric}' is not reported for task {config.task}",
                         "choose one of: " + ", ".join(task.stopping_metrics))
    return metric, "minimize" if METRIC_DIRECTIONS.get(metric, "max") == "min" else "maximize"


def sweep_id(config: TrainConfig, space: dict, metric: str) -> str:
    """The study name: the config's name and a digest of what defines the sweep, so the same
    command continues the same study."""
    blob = json.dumps({"config": config.model_dump(mode="json"), "space": space, "metric": metric},
                      sort_keys=True, default=str)
    return f"{config.name}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def default_storage(store_root: Path | None = None) -> str:
    """SQLite in the store's home (made by ``run_sweep``; reading a home without one finds no sweep)."""
    from adapters.training.runs import home

    return f"sqlite:///{home(store_root) / SWEEPS_DB}"


def _storage(url: str):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own lines
    try:
        # A worker killed mid-trial stops beating: after the grace period its trial is failed and
        # its values tried again, so a sweep resumed after a crash loses no trial.
        return RDBStorage(url, heartbeat_interval=30, grace_period=120,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                          engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
    except (ImportError, ModuleNotFoundError) as exc:
        raise UsageError(f"the study storage {url.split('://')[0]} needs a driver that is not installed ({exc})",
                         "pip install 'adapter-manager[postgres]' for PostgreSQL") from None
    except Exception as exc:  # noqa: BLE001 - sqlalchemy's errors are many; all mean the same here
        raise UsageError(f"cannot open the study storage {_shown(url)}: {str(exc).splitlines()[0]}",
                         "check --storage (e.g. postgresql+psycopg://user:pass@host/db)") from None


def _shown(url: str) -> str:
    """A storage URL without its password."""
    head, sep, tail = url.partition("://")
    if "@" in tail:
        creds, _, rest = tail.rpartition("@")
        tail = f"{creds.split(':')[0]}:***@{rest}"
    return head + sep + tail


def make_pruner(name):
    """An Optuna pruner by name (PRUNERS); an Optuna pruner object is used as it is."""
    import optuna

    if isinstance(name, optuna.pruners.BasePruner):
        return name
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"unknown pruner '{name}'", f"use one of {', '.join(PRUNERS)}")


class Pruned(Exception):
    """Raised from a trial's run when the pruner stops it; the run log ends "pruned"."""

    run_status = "pruned"


@dataclass
class TrialRow:
    number: int
    state: str  # RUNNING | COMPLETE | PRUNED | FAIL | WAITING
    params: dict[str, Any]
    value: float | None
    ref: str | None = None
    run_id: str | None = None
    seconds: float | None = None
    worker: str | None = None  # host:pid of the process that ran it


@dataclass
class SweepResult:
    id: str
    name: str  # the config's name: each finished trial is a version of it
    metric: str
    direction: str
    storage: str
    trials: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    importances: dict[str, float] = field(default_factory=dict)


def _best_alias(config_name: str, ref: str, value: float, direction: str, sid: str, store_root) -> bool:
    """Point ``NAME@best`` at ``ref`` when it beats the version there now from this sweep (a best
    from another sweep or elsewhere is replaced by this sweep's first). A file lock makes the
    compare-and-tag one step when workers finish together."""
    from filelock import FileLock

    from adapters.training.runs import home
    from adapters_store import Store
    from adapters_store.errors import RefNotFound

    root = home(store_root)
    with FileLock(str(root / "sweeps.lock")), Store(store_root) as store:
        try:
            current = store.resolve(f"{config_name}@best").lineage.get("sweep") or {}
        except RefNotFound:
            current = {}
        held = (current.get("objective") or {}).get("value") if current.get("id") == sid else None
        better = held is None or (value > held if direction == "maximize" else value < held)
        if better:
            store.tag(ref, "best")
        return better


def run_sweep(config: TrainConfig, space: list[Param], space_raw: dict, trials: int, *, metric: str | None = None,
              storage: str | None = None, pruner="median", timeout: float | None = None,
              patience: int | None = None, seed: int | None = None, store_root: Path | None = None,
              on_trial=None) -> SweepResult:
    """Run trials in this process until the study holds ``trials`` finished or pruned ones (or
    ``timeout`` seconds pass, or ``patience`` trials in a row bring no gain). ``on_trial`` gets
    each ended trial's TrialRow; ``pruner`` is a name (PRUNERS) or an Optuna pruner."""
    import optuna

    import adapters
    from adapters.training.runs import home

    metric, direction = objective_metric(config, metric)
    sid = sweep_id(config, space_raw, metric)
    if storage is None:
        home(store_root).mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(store_root)
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    study = optuna.create_study(study_name=sid, storage=_storage(url), sampler=sampler, pruner=make_pruner(pruner),
                                direction=direction, load_if_exists=True)
    study.set_user_attr("config", config.model_dump(mode="json"))
    study.set_user_attr("space", space_raw)
    study.set_user_attr("metric", metric)

    def objective(trial) -> float:
        from adapters.training.runs import new_run_id, runs_dir

        values = {p.key: p.suggest(trial) for p in space}
        cfg = with_values(config, values, f"trial {trial.number}")
        run_dir = runs_dir(store_root) / new_run_id(cfg.name)
        trial.set_user_attr("run_id", run_dir.name)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        run = {"evals": 0, "total_steps": None}

        def report(event: dict) -> None:
            if event.get("event") == "start":
                run["total_steps"] = event.get("total_steps")
            if event.get("event") != "eval" or event.get("split") != "dev":
                return
            value = (event.get("metrics") or {}).get(metric)
            if value is None:
                return
            run["evals"] += 1  # reported by evaluation number: trials of other batch sizes line up
            trial.report(float(value), run["evals"])
            # The last evaluation ends the trial anyway: pruning there saves nothing and loses a
            # finished adapter.
            if event.get("step") != run["total_steps"] and trial.should_prune():
                raise Pruned(f"trial {trial.number} pruned after {run['evals']} evaluation(s): {metric} {value:.4g}")

        def lineage(metrics: dict) -> dict:
            return {"sweep": {"id": sid, "trial": trial.number, "params": values,
                              "objective": {"metric": metric, "direction": direction,
                                            "value": (metrics.get("dev") or {}).get(metric)}}}

        try:
            result = adapters.train(cfg, run_dir=run_dir, callback=report, lineage=lineage, progress=False,
                                    store_root=store_root)
        except Pruned:
            raise optuna.TrialPruned() from None
        value = result.metrics["dev"].get(metric)
        if value is None or not math.isfinite(value):
            raise UsageError(f"trial {trial.number} reported no {metric} on dev", "check the dev split")
        trial.set_user_attr("ref", result.ref)
        trial.set_user_attr("best", _best_alias(config.name, result.ref, float(value), direction, sid, store_root))
        return float(value)

    def ended(study, frozen) -> None:
        if on_trial is not None:
            on_trial(_row(frozen))
        done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()
                and t.state != optuna.trial.TrialState.FAIL]
        if len(done) >= trials:
            study.stop()
        failed = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.FAIL]
        if len(failed) >= trials:  # every trial failing: stop rather than try forever
            study.stop()
        if patience:
            complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
            if complete and len(complete) - 1 - complete.index(study.best_trial) >= patience:
                study.stop()

    if _counted(study) < trials:
        study.optimize(objective, timeout=timeout, callbacks=[ended], catch=(UsageError,), gc_after_trial=True)
    return summarize(study, url)


def _counted(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _row(trial) -> TrialRow:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return TrialRow(trial.number, trial.state.name, dict(trial.params), trial.value,
                    trial.user_attrs.get("ref"), trial.user_attrs.get("run_id"), duration,
                    trial.user_attrs.get("worker"))


def summarize(study, url: str) -> SweepResult:
    import optuna

    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    complete = [r for r in rows if r.state == "COMPLETE"]
    result = SweepResult(study.study_name, (study.user_attrs.get("config") or {}).get("name", "?"),
                         study.user_attrs.get("metric", "?"),
                         "minimize" if study.direction == optuna.study.StudyDirection.MINIMIZE else "maximize",
                         _shown(url), rows)
    if complete:
        result.best = next(r for r in rows if r.number == study.best_trial.number)
    varied = {k for r in complete for k in r.params}
    if len(complete) >= 3 and varied:
        with contextlib.suppress(Exception):  # too few distinct values: no importances to show
            result.importances = dict(optuna.importance.get_param_importances(study))
    return result


def load_sweep(sid: str, storage: str | None = None, store_root: Path | None = None) -> SweepResult:
    """A stored sweep by id; raises UsageError naming the known ones when there is none."""
    import optuna

    url = storage or default_storage(store_root)
    if storage is None and not _default_exists(store_root):
        raise UsageError(f"no sweep '{sid}': the store has no sweeps yet", "start one with `adapters sweep`")
    engine = _storage(url)
    try:
        study = optuna.load_study(study_name=sid, storage=engine)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(engine)]
        raise UsageError(f"no sweep '{sid}' in {_shown(url)}",
                         f"known sweeps: {', '.join(known)}" if known else "start one with `adapters sweep`") from None
    return summarize(study, url)


def list_sweeps(storage: str | None = None, store_root: Path | None = None) -> list[tuple[str, int]]:
    """(id, number of trials) of every sweep in the storage."""
    import optuna

    if storage is None and not _default_exists(store_root):
        return []
    return [(s.study_name, s.n_trials) for s in optuna.get_all_study_summaries(_storage(storage or default_storage(
        store_root)))]


def _default_exists(store_root: Path | None) -> bool:
    from adapters.training.runs import home

    return (home(store_root) / SWEEPS_DB).is_file()


def spawn_worker(config: TrainConfig, space_raw: dict, argv: list[str], workdir: Path,
                 threads: int) -> subprocess.Popen:
    """Another process running this sweep: ``adapters sweep`` on the resolved config and space
    written to ``workdir``, so it joins the very same study."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file, space_file = workdir / "config.yaml", workdir / "space.yaml"
    config_file.write_text(to_yaml(config))
    space_file.write_text(yaml.safe_dump(space_raw, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-m", "adapters", "sweep", str(config_file), "--space",
                             str(space_file), *argv, "--workers", "1", "--quiet"], env=env)
