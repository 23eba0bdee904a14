"""``adapters distill``: train a student adapter on a teacher's soft labels."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from adapters.cli.options import JsonOpt, StoreOpt

console = Console(highlight=False)


def distill(
    teacher: str = typer.Option(..., "--teacher", help="A classification ref: name@prod, sha256:…, a directory, "
                                "or ensemble:a@1+b@2."),
    config: Path = typer.Option(..., "--config", help="The student's YAML training config."),
    temperature: float = typer.Option(2.0, "--temperature", "-T", help="Softmax temperature of both models (> 0)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the teacher's soft labels against the hard labels."),
    set_: list[str] = typer.Option([], "--set", help="Override a student config key, e.g. --set lora.r=2."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = JsonOpt,
    store: Path | None = StoreOpt,
) -> None:
    """Distil a classifier (or an ensemble) into a student adapter and store it as a new version."""
    from adapters.cli.train import print_metrics
    from adapters.experiments.distill import distill as run_distill
    from adapters.training import distributed

    result = run_distill(config, teacher=teacher, temperature=temperature, alpha=alpha, overrides=list(set_),
                         store_root=store, progress=not (quiet or as_json))
    if not distributed.is_main():
        return
    entry = result.lineage.get("distill", {})
    if as_json:
        print(json.dumps({"name": result.name, "run_id": result.run_id, "ref": result.ref, "digest": result.digest,
                          "metrics": result.metrics, "distill": entry}, default=str))
        return
    console.print(f"teacher: {entry['teacher']['pinned']} (T={temperature:g}, alpha={alpha:g}; "
                  f"hard labels from the {entry['hard_labels']})")
    print_metrics(result.metrics, result.name)
    if result.ref:
        console.print(f"stored as [bold]{result.ref}[/] ({result.digest[:19]}…)")


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
