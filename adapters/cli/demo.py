"""`make demo`: the main job on the built-in offline defaults.

Trains a LoRA and a prefix adapter for Rotten Tomatoes sentiment on the 4-bit MiniLM encoder and a
LoRA on the 4-bit SmolLM2 decoder (chit-chat instruction tuning), then prints a metrics table and
one prediction from each adapter. Everything comes from PyPI packages: no model hub.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def example_configs() -> Path:
    """The example configs installed with the package (``adapters_configs``: the repository's
    configs/), wherever the demo is run from."""
    import importlib.util

    spec = importlib.util.find_spec("adapters_configs")
    return Path(next(iter(spec.submodule_search_locations)))


DEMO_RUNS = [
    ("rt-minilm-lora.yaml", "A gripping, beautifully acted film that stays with you long after the credits."),
    ("rt-minilm-prefix.yaml", "A dull, predictable mess that wastes its talented cast."),
    ("chat-smollm2-lora.yaml", "What is your favourite book?"),
]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rich.console import Console
    from rich.table import Table

    import adapters
    from adapters.tasks import TASKS

    # Piped into a log (make demo | tee), rich would assume 80 columns and squeeze the table.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)
    overrides = list(argv if argv is not None else sys.argv[1:])
    rows, predictions = [], []
    for config_name, example in DEMO_RUNS:
        cfg = adapters.load_config(example_configs() / config_name, overrides)
        console.rule(f"[bold]{cfg.name}[/]  {cfg.method} on {cfg.quant} {cfg.base} ({cfg.task})")
        started = time.perf_counter()
        result = adapters.train(cfg, progress=True)
        seconds = time.perf_counter() - started
        rows.append((cfg, result, seconds))
        loaded = adapters.load(None, result.ref or result.output_dir)
        output = loaded.predict([example], **({"max_new_tokens": 40} if TASKS[cfg.task].generative else {}))[0]
        predictions.append((cfg, example, output))

    table = Table(title="adapters trained (test split)")
    for col in ("adapter", "method", "base", "accuracy", "f1 macro", "loss", "perplexity", "train s", "stored as"):
        table.add_column(col, justify="right" if col not in ("adapter", "method", "base", "stored as") else "left")
    for cfg, result, seconds in rows:
        test = result.metrics.get("test") or {}

        def fmt(key, digits=3, test=test):
            return f"{test[key]:.{digits}f}" if key in test else "-"

        table.add_row(cfg.name, cfg.method, f"{cfg.base} {cfg.quant}", fmt("accuracy"), fmt("f1_macro"),
                      fmt("loss"), fmt("perplexity", 2), f"{seconds:.0f}", result.ref or str(result.output_dir))
    console.print(table)
    for cfg, example, output in predictions:
        if TASKS[cfg.task].labels == "row":
            shown = f"[bold]{output['label']}[/] (p={output['probabilities'][output['label']]:.2f})"
        else:
            shown = f"[bold]{output}[/]"
        console.print(f"{cfg.name}: {example!r} -> {shown}")
    return 0


if __name__ == "__main__":
    from adapters.cli.main import fail
    from adapters_store.errors import HintedError

    try:
        sys.exit(main())
    except HintedError as error:
        sys.exit(fail(error))
