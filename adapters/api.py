"""The public Python API: ``adapters.train``, ``adapters.load`` and ``adapters.merge``; and
``adapters.api.cross_validate``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from adapters.artifact import adapter_dir, check_output_dir, store_ref
from adapters.combine.merge import DENSITY_METHODS, MERGE_METHODS
from adapters.config import TrainConfig, load_config

__all__ = ["DENSITY_METHODS", "MERGE_METHODS", "adapter_dir", "cross_validate", "export_merged", "load", "merge",
           "train"]


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
          progress: bool | None = None, callback: Callable[[dict], None] | None = None, store: bool = True,
          store_root: str | Path | None = None, lineage: dict | Callable[[dict], dict] | None = None,
          distillation=None):
    """Train an adapter from a config (a TrainConfig, a mapping, or a YAML path).

    The result is stored as a new version of ``config.name`` (unless ``store=False``) and returned
    as a ``TrainResult``: ``ref`` ("name@3"), ``metrics`` ({"dev": ..., "test": ...}),
    ``output_dir`` (a plain PEFT directory) and ``run_dir`` (holding the JSONL event log).

    ``progress``: a progress bar (step, loss, tokens/s, ETA); by default shown on a terminal and
    in a Jupyter notebook, not when output goes to a file or a pipe. ``callback`` gets every
    run-log event as it happens (``{"event": "step", "step": 10, "loss": ...}``, ``"eval"`` with
    its split and metrics, ``"end"``), the same dicts as the lines of ``events.jsonl``.
    ``lineage``: entries added to the adapter's lineage (``{"sweep": {...}}``), or a function of
    the run's metrics (``{"dev": ..., "test": ...}``) that returns them. ``distillation``: a
    ``training.trainer.Distillation`` to train on a teacher's soft labels (see ``distill``)."""
    cfg = _as_config(config, overrides)
    _check_before_loading(cfg, output)

    from adapters.training import distributed
    from adapters.training.runs import new_run_id, runs_dir
    from adapters.training.trainer import Trainer  # torch: after the quick checks

    # Under a distributed launch every process trains one run: the main process names it.
    distributed.join(cfg.device)
    run_dir = Path(run_dir) if run_dir else runs_dir(store_root) / distributed.from_main(new_run_id(cfg.name))
    output = Path(output) if output else run_dir / "adapter"
    init_from, parent = None, None
    if cfg.init_from:
        # The parent as the lineage records it: its canonical store ref, or outside the store its
        # absolute path (the store records the same value: it reads the lineage file).
        init_from = adapter_dir(cfg.init_from, store_root)
        parent = store_ref(cfg.init_from, store_root) or str(init_from.resolve())
    if progress is None:
        from rich.console import Console

        console = Console()
        progress = console.is_terminal or console.is_jupyter
    trainer = Trainer(cfg, output, run_dir, resume=resume, progress=progress, init_from=init_from,
                      parent=parent, callback=callback, lineage=lineage, distillation=distillation)
    if not store:
        return trainer.run()

    def keep(result) -> None:
        try:
            version = _put(result, cfg.name, store_root)
        except Exception as exc:
            raise _not_stored(result, cfg.name, exc) from exc
        result.ref = version.ref
        result.digest = version.digest

    # Stored before the run log says finished: if storing fails, the run ends as failed.
    return trainer.run(keep=keep)


def cross_validate(config: TrainConfig | dict | str | Path, folds: int = 5, *, overrides: list[str] | None = None,
                   final: bool = False, store: bool = True, store_root: str | Path | None = None,
                   resume: bool = True, progress: bool | None = None,
                   callback: Callable[[dict], None] | None = None):
    """k-fold cross-validation of a config: stratified folds of train + dev (test held out), one
    adapter per fold stored with lineage ``cv: {id, fold, folds}``, and with ``final`` one more
    trained on all folds' rows for their mean best epoch count. Returns a ``CVResult``:
    ``results`` (per fold: ref, metrics), ``summary`` (split -> metric -> mean, sd, values) and
    ``final``. ``resume``: folds this same cross-validation already stored are not trained again."""
    from adapters.experiments.cv import cross_validate as _cv

    return _cv(config, folds, overrides=overrides, final=final, store=store, store_root=store_root,
               resume=resume, progress=progress, callback=callback)


def distill(config: TrainConfig | dict | str | Path, *, teacher: str, temperature: float = 2.0, alpha: float = 0.5,
            overrides: list[str] | None = None, store_root: str | Path | None = None, **train_kwargs):
    """Train the student ``config`` on the soft labels of ``teacher`` (a classification ref, a
    directory, or ``ensemble:a@1+b@2``) and store it: loss = alpha · T² · KL(teacher_T ‖ student_T)
    + (1 - alpha) · cross-entropy on the hard labels, which come from the data or, where the data
    has no label column, from the teacher's argmax. Returns the ``TrainResult``; its lineage's
    ``distill`` entry pins the teacher. ``train_kwargs`` go to ``train`` (``output``, ``progress`` …)."""
    from adapters.experiments.distill import distill as _distill

    return _distill(config, teacher=teacher, temperature=temperature, alpha=alpha, overrides=overrides,
                    store_root=store_root, **train_kwargs)


def _check_before_loading(cfg: TrainConfig, output: str | Path | None) -> None:
    """The mistakes found in milliseconds, before torch and the base load: a data file or a local
    base that is not there, a base name that is a near miss of a built-in one, an output directory
    that holds something else (found now, not after hours of training)."""
    from adapters.base.resolve import check_base
    from adapters.data.sources import check_local_source

    check_local_source(cfg.data.source)
    check_base(cfg.base)
    if output is not None:
        check_output_dir(Path(output))


def _put(result, name: str, store_root):
    from adapters_store import Store

    with Store(store_root) as s:  # lineage, metrics, parent and run id: from the adapter's lineage file
        return s.put(result.output_dir, name)


def _not_stored(result, name: str, exc: Exception) -> Exception:
    """A hinted error for a trained adapter the store did not take; keeps the store's exit code."""
    from adapters.errors import AdaptersError

    hint = getattr(exc, "hint", None)
    again = (f"the trained adapter is kept in {result.output_dir}: once the store works, add it with "
             f"`adapters import {result.output_dir} --name {name}`, or train again with --resume")
    error = AdaptersError(f"training finished but the adapter could not be stored: "
                          f"{getattr(exc, 'message', None) or exc}", f"{hint}; {again}" if hint else again)
    error.exit_code = getattr(exc, "exit_code", 1)
    return error


def load(base: str | None, adapter: str | Path, *, quant: str | None = None, device: str = "auto",
         store_root: str | Path | None = None, compute_dtype: str = "auto"):
    """Load an adapter (a store ref such as "name@prod", or a directory) onto a base.

    ``base=None`` loads the base it was trained on. Returns a ``Loaded``: ``.predict(...)``, or
    ``model, tokenizer = adapters.load(...)`` for a plain peft model."""
    from adapters.inference import load as _load

    return _load(base, adapter_dir(adapter, store_root), quant=quant, device=device, compute_dtype=compute_dtype)


def merge(refs: list[str], *, weights: list[float] | None = None, method: str = "linear",
          density: float | None = None, name: str, store=None, seed: int = 0):
    """Merge stored adapters into a new stored version of ``name``.

    ``method``: linear, cat, svd, ties, dare_linear or dare_ties (peft's ``add_weighted_adapter``;
    prefix adapters: linear, an average of their virtual keys/values). ``weights`` default to equal
    weights summing to 1; ``density`` (ties/dare, default 0.5) is the share of values kept.
    Classifier heads are averaged. Adapters of different bases, methods, tasks or label maps are
    refused. Returns a ``MergeResult`` with ``ref``, ``digest`` and ``lineage`` (``lineage["merge"]``
    names every parent with its digest and weight). ``store``: a Store, a directory, or None."""
    from adapters.combine.merge import merge as _merge

    return _merge(refs, weights=weights, method=method, density=density, name=name, store=store, seed=seed)


def export_merged(adapter: str | Path, dest: str | Path, *, store_root: str | Path | None = None):
    """Save ``adapter``'s base with the LoRA adapter merged in (float32; a quantized base is
    dequantized first) to ``dest`` as a model plain ``transformers`` loads."""
    from adapters.combine.export_merged import export_merged as _export

    return _export(adapter, dest, store_root=store_root)
