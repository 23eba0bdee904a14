"""``adapters cv``: k-fold cross-validation of a training config (``adapters.experiments.cv``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from adapters.cli.options import JsonOpt, StoreOpt
from adapters.cli.train import SET_HELP

console = Console(highlight=False)

# The columns of the summary table per task; other numbers stay in --json.
COLUMNS = {"classification": ("accuracy", "f1_macro", "precision_macro", "recall_macro"),
           "token-classification": ("f1", "precision", "recall", "accuracy"),
           "causal-lm": ("loss", "perplexity")}


def cv(
    config: Path = typer.Argument(..., help="A YAML training config, e.g. configs/rt-minilm-lora.yaml."),
    folds: int = typer.Option(5, "--folds", "-k", help="Number of folds (at least 2)."),
    final: bool = typer.Option(False, "--final", help="Also train an adapter on all folds' rows, for the "
                               "folds' mean best epoch count."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    name: str | None = typer.Option(None, "--name", help="Adapter name (default: `name` in the config)."),
    fresh: bool = typer.Option(False, "--fresh", help="Train every fold again, even those already stored."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = JsonOpt,
    store: Path | None = StoreOpt,
) -> None:
    """Cross-validate a config: one stored adapter per fold, metrics as mean ± sd."""
    from adapters.experiments.cv import check_folds, cross_validate

    check_folds(folds)
    overrides = list(set_) + ([f"name={name}"] if name else [])

    def on_fold(result) -> None:
        if as_json:
            return
        which = "final (all folds)" if result.fold == "all" else f"fold {result.fold + 1}/{folds}"
        state = "already stored" if result.reused else "stored"
        console.print(f"{which}: {state} as [bold]{result.ref}[/]" if result.ref else f"{which}: done")

    result = cross_validate(config, folds, overrides=overrides, final=final, store_root=store,
                            resume=not fresh, progress=not (quiet or as_json), on_fold=on_fold)
    if as_json:
        print(json.dumps(result.to_json(), default=str))
        return
    task = result.task
    for split in ("dev", "test"):
        if split in result.summary:
            console.print(summary_table(result, split, COLUMNS.get(task, ())))
    if result.final is not None:
        length = ", ".join(f"{k} {v}" for k, v in (result.final_training or {}).items())
        test = result.final.metrics.get("test") or {}
        shown = "  ".join(f"{k} {test[k]:.4f}" for k in COLUMNS.get(task, ()) if k in test)
        console.print(f"final adapter ({length}): [bold]{result.final.ref}[/]" + (f"  test: {shown}" if shown else ""))
    console.print(f"cv id: {result.cv_id}")


def summary_table(result, split: str, preferred: tuple[str, ...]):
    """One row per fold and a mean ± sd row, one column per metric."""
    from rich.table import Table

    summary = result.summary[split]
    names = [m for m in preferred if m in summary] or list(summary)
    table = Table(title=f"{result.name}: {result.folds}-fold cross-validation — {split}", header_style="bold")
    table.add_column("fold")
    table.add_column("version")
    for metric in names:
        table.add_column(metric, justify="right")
    for i, fold in enumerate(result.results):
        table.add_row(str(i + 1), fold.ref or "-", *(f"{summary[m]['values'][i]:.4f}" for m in names))
    table.add_section()
    table.add_row("mean ± sd", "", *(f"{summary[m]['mean']:.4f} ± {summary[m]['sd']:.4f}" for m in names),
                  style="bold")
    return table


def register(app: typer.Typer) -> None:
    app.command("cv")(cv)
