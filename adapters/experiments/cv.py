"""k-fold cross-validation: K adapters, one per fold, and their metrics as mean ± sd.

Each fold is a config of its own (``data.split.folds: K``, ``data.split.fold: i``; the folds
themselves are cut in ``adapters.data.splits``), trained through ``adapters.train`` and stored as a
version whose lineage says ``cv: {id, fold, folds}``. The cv id is a hash of the config (without
its fold) and K, so running the same cross-validation again finds the folds already stored and
trains only the missing ones. The optional final adapter trains on every fold's rows for the
folds' mean best epoch count (the mean best step when the config fixes ``training.max_steps``).

Causal LM configs are cross-validated too, with plain KFold: their rows have no label to stratify
on, and their loss and perplexity are as well defined per fold as any classifier metric.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from adapters.config import TrainConfig, load_config
from adapters.errors import ConfigError

SPLITS = ("dev", "test")


@dataclass
class FoldResult:
    fold: int | str  # 0 .. K-1, or "all" for the final adapter
    ref: str | None
    digest: str | None
    run_id: str | None
    metrics: dict  # {"dev": {...}, "test": {...}, "best_step": ..., "steps": ...}
    reused: bool = False  # found in the store from an earlier run of the same cross-validation
    best_epochs: float | None = None  # the best step in epochs of this fold's training rows


@dataclass
class CVResult:
    cv_id: str
    name: str
    task: str
    folds: int
    results: list[FoldResult]
    # split -> metric -> {"mean", "sd", "values"}: sd is the sample standard deviation (ddof=1)
    summary: dict[str, dict[str, dict]] = field(default_factory=dict)
    # The adapter trained on every fold (--final): its "dev" metrics are on its own training rows,
    # its "test" metrics on the held-out test split.
    final: FoldResult | None = None
    final_training: dict | None = None  # {"epochs": x} or {"max_steps": n}: how long the final trained

    def to_json(self) -> dict:
        return asdict(self)


def cv_id(cfg: TrainConfig, folds: int) -> str:
    """The same for the same config (fold aside) and number of folds: the key that resuming
    looks for in the store."""
    raw = cfg.model_dump(mode="json")
    raw["data"]["split"] = {k: v for k, v in raw["data"]["split"].items() if k not in ("fold", "folds")}
    digest = hashlib.sha256(json.dumps({"config": raw, "folds": folds}, sort_keys=True).encode()).hexdigest()
    return "cv-" + digest[:12]


def check_folds(folds: int) -> None:
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--folds must be a whole number of at least 2, not {folds!r}",
                         "k-fold cross-validation trains one adapter per fold, e.g. --folds 5")


def fold_config(cfg: TrainConfig, folds: int, fold: int | str, overrides: list[str] | None = None) -> TrainConfig:
    return load_config(raw=cfg.model_dump(mode="json"),
                       overrides=[f"data.split.folds={folds}", f"data.split.fold={fold}", *(overrides or [])])


def summarize(metrics: list[dict]) -> dict[str, dict[str, dict]]:
    """Mean and sample sd of every number each fold reports, per split."""
    summary: dict[str, dict[str, dict]] = {}
    for split in SPLITS:
        parts = [m.get(split) or {} for m in metrics]
        names = [k for k, v in parts[0].items() if _number(v)] if parts else []
        out = {}
        for name in names:
            values = [p.get(name) for p in parts]
            if all(_number(v) for v in values):
                arr = np.asarray(values, dtype=np.float64)
                out[name] = {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                             "values": [float(v) for v in values]}
        if out:
            summary[split] = out
    return summary


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _stored_folds(name: str, cid: str, store_root) -> dict:
    """fold -> the latest stored version of this cross-validation's fold."""
    from adapters_store import Store

    found = {}
    with Store(store_root) as s:
        for version in s.list(name=name):
            entry = version.lineage.get("cv") or {}
            if entry.get("id") == cid:
                found[entry.get("fold")] = version
    return found


def _best_epochs(metrics: dict) -> float | None:
    """The best step as epochs of the fold's own training rows (the final has more rows per
    epoch, so epochs carry over where steps would not)."""
    best, per_epoch = metrics.get("best_step"), metrics.get("steps_per_epoch")
    return best / per_epoch if best and per_epoch else None


def cross_validate(config: TrainConfig | dict | str | Path, folds: int, *, overrides: list[str] | None = None,
                   final: bool = False, store: bool = True, store_root: str | Path | None = None,
                   resume: bool = True, progress: bool | None = None,
                   callback: Callable[[dict], None] | None = None,
                   on_fold: Callable[[FoldResult], None] | None = None) -> CVResult:
    """Train one adapter per fold (and with ``final`` one on all folds' rows); see the module
    docstring. ``resume``: reuse the folds this cross-validation already stored. ``on_fold`` is
    called with each fold's result as it is ready."""
    from adapters.api import _as_config, _check_before_loading
    from adapters.api import train as train_one

    check_folds(folds)
    cfg = _as_config(config, overrides)
    configs = [fold_config(cfg, folds, i) for i in range(folds)]  # every fold validates before any trains
    _check_before_loading(cfg, None)
    cid = cv_id(cfg, folds)
    stored = _stored_folds(cfg.name, cid, store_root) if store and resume else {}
    results = []
    for i, fold_cfg in enumerate(configs):
        version = stored.get(i)
        if version is not None:
            metrics = version.lineage.get("metrics") or version.metrics
            result = FoldResult(i, version.ref, version.digest, version.run_id, metrics, reused=True,
                                best_epochs=_best_epochs(metrics))
        else:
            trained = train_one(fold_cfg, store=store, store_root=store_root, progress=progress, callback=callback,
                                lineage={"cv": {"id": cid, "fold": i, "folds": folds}})
            result = FoldResult(i, trained.ref, trained.digest, trained.run_id, trained.metrics,
                                best_epochs=_best_epochs(trained.metrics))
        results.append(result)
        if on_fold:
            on_fold(result)
    out = CVResult(cid, cfg.name, cfg.task, folds, results, summarize([r.metrics for r in results]))
    if final:
        out.final_training = _final_training(cfg, results)
        out.final = _train_final(cfg, folds, cid, out, stored.get("all"), train_one, store=store,
                                 store_root=store_root, progress=progress, callback=callback)
        if on_fold:
            on_fold(out.final)
    return out


def _final_training(cfg: TrainConfig, results: list[FoldResult]) -> dict:
    if cfg.training.max_steps:
        steps = [r.metrics.get("best_step") or r.metrics.get("steps") for r in results]
        return {"max_steps": max(1, round(float(np.mean(steps))))}
    epochs = [r.best_epochs for r in results if r.best_epochs]
    return {"epochs": round(float(np.mean(epochs)), 3) if epochs else cfg.training.epochs}


def _train_final(cfg: TrainConfig, folds: int, cid: str, cv: CVResult, version, train_one, **kw) -> FoldResult:
    """The final adapter: every fold's rows, for the folds' mean best length. Its dev split is its
    own training rows, so no best step is picked: it is evaluated once, at the end."""
    length = cv.final_training
    if version is not None and all(version.lineage.get("cv", {}).get(k) == v for k, v in length.items()):
        metrics = version.lineage.get("metrics") or version.metrics
        return FoldResult("all", version.ref, version.digest, version.run_id, metrics, reused=True)
    sets = [f"training.{k}={v}" for k, v in length.items()]
    # One evaluation, after the last step: the final adapter has no held-out rows to pick a step on.
    final_cfg = fold_config(cfg, folds, "all", [*sets, "training.early_stopping=null", "training.eval_every=end"])
    dev_mean = {k: v["mean"] for k, v in cv.summary.get("dev", {}).items()}
    trained = train_one(final_cfg, lineage={"cv": {"id": cid, "fold": "all", "folds": folds, "final": True,
                                                   **length, "folds_refs": [r.ref for r in cv.results],
                                                   "dev_mean": dev_mean}}, **kw)
    return FoldResult("all", trained.ref, trained.digest, trained.run_id, trained.metrics)
