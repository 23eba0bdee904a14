"""``adapters merge``: combine stored adapters into a new stored version (torch loads inside)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from adapters.cli.options import JsonOpt, StoreOpt
from adapters.errors import UsageError


def _weights(values: list[str]) -> list[float] | None:
    """``--weights 0.7,0.3`` or ``--weights 0.7 --weights 0.3``."""
    items = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not items:
        return None
    try:
        return [float(x) for x in items]
    except ValueError:
        raise UsageError(f"--weights takes numbers, got {', '.join(items)}",
                         "one weight per adapter, e.g. --weights 0.7,0.3") from None


def merge_cmd(
    refs: list[str] = typer.Argument(..., help="Two or more stored adapters (name, name@3, name@alias, sha256:…)."),
    name: str = typer.Option(..., "--name", help="Adapter name to store the merge under (a new version)."),
    weights: list[str] = typer.Option([], "--weights", help="One weight per adapter, e.g. 0.7,0.3 "
                                      "(default: equal weights summing to 1)."),
    method: str = typer.Option("linear", "--method", help="linear, cat, svd, ties, dare_linear or dare_ties "
                               "(peft's add_weighted_adapter; prefix adapters: linear)."),
    density: float | None = typer.Option(None, "--density", help="ties / dare: share of each adapter's "
                                            "values kept, in (0, 1] (default 0.5)."),
    seed: int = typer.Option(0, "--seed", help="Seed for dare's random drop (recorded in the lineage)."),
    as_json: bool = JsonOpt,
    store: Path | None = StoreOpt,
) -> None:
    """Merge adapters of one base, method and task into a new stored version."""
    from adapters.combine.merge import check_options, merge

    parsed = _weights(weights)
    check_options(refs, parsed, method, density)  # bad options fail before torch loads
    result = merge(refs, weights=parsed, method=method, density=density, name=name, store=store, seed=seed)
    if as_json:
        from adapters_store import Store

        with Store(store) as s:
            typer.echo(json.dumps(s.resolve(result.ref).to_dict(), indent=2, default=str))
        return
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    record = result.lineage["merge"]
    parents = ", ".join(f"{p['ref']} × {p['weight']:g}" for p in record["parents"])
    density_text = f", density {record['density']:g}" if record.get("density") is not None else ""
    console.print(f"stored {result.ref} ({result.digest[:19]}): {result.method} merge{density_text} of {parents}")
    if record.get("head"):
        head = record["head"]
        console.print(f"task head ({', '.join(head['modules'])}): weighted average with weights "
                      f"{', '.join(f'{w:g}' for w in head['weights'])}")


def register(app: typer.Typer) -> None:
    app.command("merge")(merge_cmd)
