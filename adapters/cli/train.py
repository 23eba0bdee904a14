"""Training-side commands of the ``adapters`` CLI: train, eval, predict, models."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from adapters.cli.options import JsonOpt, StoreOpt
from adapters.errors import UsageError
from adapters.training import distributed
from adapters.training.runs import EVENTS_FILE, latest_unfinished_run

console = Console(highlight=False)

SET_HELP = "Override a config key, e.g. --set training.epochs=2 (repeatable)."


def print_metrics(result_metrics: dict, title: str) -> None:
    from adapters.evaluation.metrics import metrics_table

    for split in ("dev", "test"):
        if result_metrics.get(split):
            console.print(metrics_table(result_metrics[split], title=f"{title} — {split}"))


def train(
    config: Path = typer.Argument(..., help="A YAML training config, e.g. configs/rt-minilm-lora.yaml."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the PEFT directory here."),
    name: str | None = typer.Option(None, "--name", help="Adapter name (default: `name` in the config)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the last interrupted run of this config."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Run directory (event log, checkpoints)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = JsonOpt,
    store: Path | None = StoreOpt,
    no_store: bool = typer.Option(False, "--no-store", help="Do not add the result to the store."),
) -> None:
    """Train a LoRA or prefix adapter from a YAML config and store it as a new version."""
    from adapters.api import _as_config
    from adapters.api import train as run_training

    overrides = list(set_) + ([f"name={name}"] if name else [])
    cfg = _as_config(config, overrides)
    if resume and run_dir is None:
        run_dir = latest_unfinished_run(cfg.name, store)
        if run_dir is None:
            raise UsageError(f"no interrupted run of '{cfg.name}' to resume",
                             "start it without --resume, or pass --run-dir of the run")
    result = run_training(cfg, output=output, run_dir=run_dir, resume=resume, progress=not (quiet or as_json),
                          store=not no_store, store_root=store)
    if not distributed.is_main():  # one process reports for all of a distributed run
        return
    if as_json:
        print(json.dumps({"name": result.name, "run_id": result.run_id, "output": str(result.output_dir),
                          "ref": result.ref, "digest": result.digest, "metrics": result.metrics}, default=str))
        return
    data = result.lineage.get("data", {})
    console.print("rows: " + ", ".join(f"{k} {v}" for k, v in data.get("sizes", {}).items()))
    for split, counts in data.get("class_balance", {}).items():
        total = sum(counts.values()) or 1
        console.print(f"class balance ({split}): " + ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in counts.items()))
    print_metrics(result.metrics, cfg.name)
    if result.ref:
        console.print(f"stored as [bold]{result.ref}[/] ({result.digest[:19]}…)")
    console.print(f"adapter directory: {result.output_dir}")
    console.print(f"run log: {result.run_dir / EVENTS_FILE}")


def evaluate_cmd(
    adapter: str = typer.Argument(..., help="A store ref (name, name@3, name@prod, sha256:…) or an adapter directory."),
    data: str | None = typer.Option(None, "--data", help="Dataset to score on (default: the training data)."),
    split: str = typer.Option("test", "--split", help="train, dev, test, or all."),
    set_: list[str] = typer.Option([], "--set", help="Override data keys, e.g. --set data.text_column=review."),
    base: str | None = typer.Option(None, "--base", help="Base model (default: the one it was trained on)."),
    as_json: bool = JsonOpt,
    store: Path | None = StoreOpt,
) -> None:
    """Score a trained adapter on any dataset."""
    from adapters.evaluation.score import score_adapter

    if split not in ("train", "dev", "test", "all"):
        raise UsageError(f"unknown split '{split}'", "use train, dev, test or all")
    metrics = score_adapter(adapter, data=data, split=split, overrides=list(set_), base=base, store_root=store)
    if as_json:
        print(json.dumps(metrics, default=str))
        return
    from adapters.evaluation.metrics import metrics_table

    console.print(metrics_table(metrics, title=f"{adapter} on {data or 'its training data'} ({split})"))


def predict(
    adapter: str = typer.Argument(..., help="A store ref (name, name@3, name@prod, sha256:…) or an adapter directory."),
    inputs: list[str] = typer.Argument(..., help="Texts to classify, prompts to answer, or sentences to tag."),
    base: str | None = typer.Option(None, "--base", help="Base model (default: the one it was trained on)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="For generation adapters."),
    as_json: bool = JsonOpt,
    store: Path | None = StoreOpt,
) -> None:
    """Run an adapter on a few inputs."""
    from adapters.api import load
    from adapters.tasks import TASKS

    loaded = load(base, adapter, store_root=store)
    task = TASKS[loaded.task]
    kwargs = {"max_new_tokens": max_new_tokens} if task.generative else {}
    outputs = loaded.predict(list(inputs), **kwargs)
    if as_json:
        print(json.dumps(outputs, default=str))
        return
    for text, out in zip(inputs, outputs):
        if task.labels == "row":
            console.print(f"[bold]{out['label']}[/] ({out['probabilities'][out['label']]:.3f})  {text}")
        elif task.generative:
            console.print(f"[bold]> {text}[/]\n{out}")
        else:
            console.print(" ".join(w if t == "O" else f"[bold]{w}[/]/{t}" for w, t in out))


def models(as_json: bool = JsonOpt) -> None:
    """List built-in offline bases and what is converted in the cache."""
    from rich.table import Table

    from adapters.base.resolve import cache_dir, list_builtins

    rows = list_builtins()
    if as_json:
        print(json.dumps({"builtins": rows, "cache": str(cache_dir())}))
        return
    table = Table(title="built-in bases (any HF id, local directory or .gguf file also works)")
    for col in ("name", "kind", "installed", "converted", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["kind"], "yes" if r["installed"] else "no",
                      r["converted"] or ("-" if not (r["source"] or "").endswith(".gguf") else "on first use"),
                      r["description"])
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate_cmd)
    app.command("predict")(predict)
    app.command("models")(models)
