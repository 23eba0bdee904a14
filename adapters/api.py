"""The public Python API: ``adapters.train`` and ``adapters.load``."""

from __future__ import annotations

from pathlib import Path

from adapters.config import TrainConfig, load_config


def _as_config(config: TrainConfig | dict | str | Path, overrides: list[str] | None) -> TrainConfig:
    if isinstance(config, TrainConfig):
        if not overrides:
            return config
        return load_config(raw=config.model_dump(mode="json"), overrides=overrides)
    if isinstance(config, dict):
        return load_config(raw=config, overrides=overrides)
    return load_config(config, overrides)


def train(config: TrainConfig | dict | str | Path, *, overrides: list[str] | None = None,
          output: str | Path | None = None, run_dir: str | Path | None = None, resume: bool = False,
          progress: bool = False):
    """Train an adapter from a config (a TrainConfig, a mapping, or a YAML path).

    Returns a ``TrainResult`` with ``metrics`` ({"dev": ..., "test": ...}), ``output_dir`` (a plain
    PEFT directory) and ``run_dir`` (holding the JSONL event log)."""
    from adapters.trainer import Trainer, new_run_id
    from adapters.paths import runs_dir

    cfg = _as_config(config, overrides)
    run_dir = Path(run_dir) if run_dir else runs_dir() / new_run_id(cfg.name)
    output = Path(output) if output else run_dir / "adapter"
    return Trainer(cfg, output, run_dir, resume=resume, progress=progress).run()


def load(base: str | None, adapter: str | Path, *, quant: str | None = None, device: str = "auto"):
    """Load an adapter onto a base; returns a ``Loaded`` (``model, tokenizer = ...`` unpacks)."""
    from adapters.inference import load as _load

    return _load(base, adapter_dir(adapter), quant=quant, device=device)


def adapter_dir(adapter: str | Path) -> Path:
    """An adapter directory from a path (or, once stored, a store ref)."""
    from adapters.errors import UsageError

    path = Path(adapter).expanduser()
    if path.is_dir():
        return path
    raise UsageError(f"adapter not found: {adapter}",
                     "pass an adapter directory (adapter_config.json inside) or a store ref such as name@latest")
