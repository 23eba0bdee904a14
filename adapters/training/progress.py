"""A rich progress bar for training: step, loss, tokens/s and ETA."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total_steps: int, enabled: bool = True, start: int = 0):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), disable=not enabled, transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start, stats="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, step: int, loss: float | None = None, tokens_per_s: float | None = None) -> None:
        fields = {}
        if loss is not None:
            fields["stats"] = f"loss {loss:.4f}  {tokens_per_s:,.0f} tok/s"
        self.progress.update(self.task, completed=step, **fields)
