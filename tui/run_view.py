"""One training run, live: progress, step and epoch, ETA, tokens/s, the loss curve and the dev
metric over steps (textual-plotext), and the latest evaluation."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, ProgressBar, Static
from textual_plotext import PlotextPlot

from adapters.evaluation.metrics import HEADLINE_METRICS
from adapters_tui.formatting import duration, number
from adapters_tui.runs import RunState
from adapters_tui.widgets import FittedLine

STATUS_STYLES = {"running": "bold yellow", "finished": "bold green", "failed": "bold red",
                 "cancelled": "bold magenta", "pruned": "magenta", "stalled": "bold red", "starting": "dim"}


def value_range(values: list[float]) -> tuple[float, float] | None:
    """A y-range for values that are all the same (plotext would make up a span around them):
    a tenth of the value either side (at least 0.05), not below 0 for values that are not."""
    low, high = min(values), max(values)
    if high > low:
        return None
    pad = max(abs(low) * 0.1, 0.05)
    return (max(0.0, low - pad) if low >= 0 else low - pad), high + pad


def step_range(run: RunState, steps: list[int]) -> tuple[float, float] | None:
    """The x-range of the dev metric's plot: the steps the loss plot covers, so the two line up,
    and never a single step (a point is drawn in the middle of a range around it)."""
    first = min([s for s, _ in run.losses] + steps)
    last = max([s for s, _ in run.losses] + steps)
    return (first - 1, last + 1) if first == last else (first, last)


def dev_metric(run: RunState) -> str | None:
    """The metric to plot: the first headline metric the dev evaluations report."""
    for _, metrics in run.dev_history():
        for key in HEADLINE_METRICS:
            if isinstance(metrics.get(key), (int, float)):
                return key
    return None


class RunView(Vertical):
    def compose(self) -> ComposeResult:
        with Horizontal(id="run-header"):
            yield Static(Text("No run selected.", style="dim"), id="run-title")
            yield Button("Cancel run", id="cancel-run", variant="error", compact=True)
            yield Button("Open in store", id="open-version", compact=True)
        with Horizontal(id="run-progress-row"):
            yield ProgressBar(total=1, show_eta=False, id="run-progress")
            yield Static("", id="run-stats")
        with Horizontal(id="run-plots"):
            yield PlotextPlot(id="loss-plot")
            yield PlotextPlot(id="metric-plot")
        yield Static("", id="run-metrics")

    def on_mount(self) -> None:
        self._draw_empty()

    def _draw_empty(self) -> None:
        for plot_id, title in (("#loss-plot", "train loss"), ("#metric-plot", "dev metric")):
            plot = self.query_one(plot_id, PlotextPlot)
            plot.plt.clear_data()
            plot.plt.clear_figure()
            plot.plt.title(title)
            plot.refresh()

    def show(self, run: RunState | None, now: float) -> None:
        if run is None:
            self.query_one("#run-title", Static).update(Text("No run selected.", style="dim"))
            self.query_one("#run-stats", Static).update("")
            self.query_one("#run-metrics", Static).update("")
            self.query_one(ProgressBar).update(total=1, progress=0)
            self._draw_empty()
            return
        status = run.display_status(now)
        title = Text.assemble((run.name or "?", "bold"), "  ", (status, STATUS_STYLES.get(status, "")),
                              "  ", (run.run_id, "dim"))
        if run.ref:
            title.append(f"  → {run.ref}", style="bold green")
        if run.error and status in ("failed", "cancelled"):
            title.append(f"\n{run.error}", style="red")
            if run.hint:
                title.append(f"\nhint: {run.hint}", style="yellow")
        self.query_one("#run-title", Static).update(title)
        self.query_one(ProgressBar).update(total=run.total_steps or 1, progress=run.step)
        # (text, rank): a narrow screen keeps the low ranks.
        stats = [(f"step {run.step}/{run.total_steps or '?'}", 0), (f"epoch {run.epoch:.2f}", 4)]
        if status == "running":
            stats.append((f"ETA {duration(run.eta(now))}", 1))
        elapsed = run.elapsed(now)
        if elapsed is not None:
            stats.append((f"elapsed {duration(elapsed)}", 2))
        if run.tokens_per_s is not None:
            stats.append((f"{run.tokens_per_s:,.0f} tok/s", 3))
        if run.learning_rate is not None:
            stats.append((f"lr {number(run.learning_rate)}", 5))
        self.query_one("#run-stats", Static).update(FittedLine([t for t, _ in stats], [r for _, r in stats]))
        self._plot_loss(run)
        self._plot_metric(run)
        self.query_one("#run-metrics", Static).update(self._eval_table(run))

    def _plot_loss(self, run: RunState) -> None:
        plot = self.query_one("#loss-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("train loss")
        if run.losses:
            steps, losses = zip(*run.losses)
            plt.plot(list(steps), list(losses), marker="braille")
            plt.xlabel("step")
            if (y := value_range(list(losses))) is not None:
                plt.ylim(*y)
            if len(set(steps)) == 1:
                plt.xlim(steps[0] - 1, steps[0] + 1)
        plot.refresh()

    def _plot_metric(self, run: RunState) -> None:
        plot = self.query_one("#metric-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        key = dev_metric(run)
        plt.title(f"dev {key}" if key else "dev metric")
        if key:
            points = [(step, m[key]) for step, m in run.dev_history() if isinstance(m.get(key), (int, float))]
            steps, values = zip(*points)
            plt.plot(list(steps), list(values), marker="braille")
            plt.scatter(list(steps), list(values))
            plt.xlabel("step")
            if (y := value_range(list(values))) is not None:
                plt.ylim(*y)
            plt.xlim(*step_range(run, list(steps)))
        plot.refresh()

    def _eval_table(self, run: RunState):
        latest: dict[str, dict] = {}
        for e in run.evals:
            latest[str(e["split"])] = e["metrics"]
        if not latest:
            return Text("No evaluation yet.", style="dim")
        keys = [k for k in dict.fromkeys(k for m in latest.values() for k in m)
                if all(isinstance(m.get(k, 0), (int, float)) for m in latest.values())]
        table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
        table.add_column("split")
        for key in keys:
            table.add_column(key, justify="right")
        for split, metrics in latest.items():
            table.add_row(split, *(number(metrics.get(k)) for k in keys))
        return table
