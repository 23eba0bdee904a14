"""``adapters sweep``: a hyper-parameter search whose every finished trial is a stored version
(see adapters/experiments/sweep.py), and ``adapters sweep show`` for its trials."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from adapters.cli.options import JsonOpt, StoreOpt
from adapters.cli.train import SET_HELP
from adapters.errors import UsageError

console = Console(highlight=False)


def sweep(
    config: str = typer.Argument(..., help="A YAML training config; or `show` to list sweeps / show one."),
    sweep_id: str | None = typer.Argument(None, help="With `show`: the sweep id (omit to list the sweeps)."),
    space: Path | None = typer.Option(None, "--space", help="YAML: config keys to values to try, e.g. "
                                      "'lora.r: [4, 8, 16]', 'training.learning_rate: {log_uniform: [1e-4, 3e-2]}'."),
    trials: int = typer.Option(16, "--trials", min=1, help="Finished or pruned trials the sweep runs to, in all."),
    workers: int = typer.Option(1, "--workers", min=1, help="Trials at once on this machine (processes)."),
    storage: str | None = typer.Option(None, "--storage", help="Optuna storage URL shared by workers, e.g. "
                                       "postgresql+psycopg://user:pass@host/db (default: SQLite in the store's home)."),
    timeout: float | None = typer.Option(None, "--timeout", min=1, help="Stop starting trials after this many s."),
    pruner: str = typer.Option("median", "--pruner", help="median | halving | hyperband | none."),
    metric: str | None = typer.Option(None, "--metric", help="The dev metric to optimize (default: the config's "
                                      "early-stopping metric, else the task's headline one)."),
    patience: int | None = typer.Option(None, "--patience", min=1, help="Stop when this many finished trials in a "
                                        "row bring no gain."),
    seed: int | None = typer.Option(0, "--seed", help="The sampler's seed."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per trial."),
    as_json: bool = JsonOpt,
    store: Path | None = StoreOpt,
) -> None:
    """Search hyper-parameters on the dev split (Optuna: TPE, pruning); every finished trial is a
    stored version, NAME@best the best. Run the same command again to continue the sweep."""
    from adapters.experiments import sweep as S

    if config == "show":
        if sweep_id is None:
            rows = S.list_sweeps(storage, store)
            if as_json:
                print(json.dumps([{"id": sid, "trials": n} for sid, n in rows]))
                return
            if not rows:
                console.print("no sweeps yet: start one with `adapters sweep CONFIG --space SPACE.yaml`")
            for sid, n in rows:
                console.print(f"{sid}  {n} trial(s)")
            return
        _show(S.load_sweep(sweep_id, storage, store), as_json)
        return
    if space is None:
        raise UsageError("no search space", "pass --space SPACE.yaml (config keys to values to try)")
    if sweep_id is not None:
        raise UsageError(f"unexpected argument '{sweep_id}'", "adapters sweep CONFIG --space SPACE.yaml")
    from adapters.api import _as_config

    cfg = _as_config(Path(config), list(set_))
    params, raw = S.read_space(space, cfg)
    objective, _ = S.objective_metric(cfg, metric)  # a wrong metric fails now, not after the first trial
    S.make_pruner(pruner)

    def show_trial(row: S.TrialRow) -> None:
        if quiet or as_json:
            return
        value = "" if row.value is None else f" {row.value:.4f}"
        where = f" -> {row.ref}" if row.ref else ""
        console.print(f"trial {row.number}: {row.state.lower()}{value}{where}  {_params(row.params)}")

    children = []
    if workers > 1:
        from adapters.training.runs import home

        sid = S.sweep_id(cfg, raw, objective)
        argv = ["--trials", str(trials), "--pruner", pruner, "--storage", storage or S.default_storage(store)]
        for flag, value in (("--timeout", timeout), ("--metric", metric), ("--patience", patience),
                            ("--store", store)):
            if value is not None:
                argv += [flag, str(value)]
        threads = max(1, (os.cpu_count() or 1) // workers)
        # Each worker samples from its own seed: the same seed would start every worker on the same values.
        children = [S.spawn_worker(cfg, raw, [*argv, "--seed", str((seed or 0) + i)], home(store) / "sweeps" / sid,
                                   threads) for i in range(1, workers)]
        import torch

        torch.set_num_threads(threads)
    try:
        result = S.run_sweep(cfg, params, raw, trials, metric=metric, storage=storage, pruner=pruner,
                             timeout=timeout, patience=patience, seed=seed, store_root=store, on_trial=show_trial)
        for child in children:
            child.wait()
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
    if children:  # the workers' last trials are in the storage: read it again
        result = S.load_sweep(result.id, storage, store)
    _show(result, as_json)
    if any(child.returncode for child in children):
        raise UsageError(f"{sum(1 for c in children if c.returncode)} sweep worker(s) failed", "see their output above")


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _show(result, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**asdict(result), "trials": [asdict(t) for t in result.trials]}, default=str))
        return
    table = Table(title=f"sweep {result.id} ({result.direction} dev {result.metric}; {result.storage})")
    for column in ("trial", "state", result.metric, "version", "seconds", "parameters"):
        table.add_column(column, justify="right" if column in ("trial", result.metric, "seconds") else "left")
    best = result.best.number if result.best else None
    for row in result.trials:
        mark = " *" if row.number == best else ""
        table.add_row(f"{row.number}{mark}", row.state.lower(), "" if row.value is None else f"{row.value:.4f}",
                      row.ref or "", "" if row.seconds is None else f"{row.seconds:.0f}", _params(row.params))
    console.print(table)
    if result.best:
        console.print(f"best: trial {result.best.number}, {result.metric} {result.best.value:.4f} -> "
                      f"{result.best.ref}  {_params(result.best.params)}")
    if result.importances:
        console.print("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items()))


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
