"""Distillation: a student adapter trained on a teacher's soft labels.

The teacher is any classification ref the serving engine takes (``name@prod``, ``sha256:…``, a
directory, or ``ensemble:a@1+b@2``); each member is pinned to its stored version first, so the
lineage and the teacher pass name the same weights even if an alias moves meanwhile. The teacher
runs once over the training rows, in batches, on its own engine, before the student's base loads
(``trainer.Distillation``); its probabilities are mapped by label name onto the student's label
order. Data without the configured label column is labelled by the teacher (its argmax, which the
hard-label term then uses); that labelled copy is written under ``<home>/distill/<hash>/`` so the
run's data fingerprint and a later ``--resume`` see the same rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import UsageError

BATCH = 64  # rows per teacher call: one forward pass of the engine each


@dataclass(frozen=True)
class Member:
    ref: str  # as given
    pinned: str  # the store's name@n, or the directory's absolute path
    digest: str | None
    weight: float


def check_settings(temperature: float, alpha: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise UsageError(f"--temperature must be a number > 0, got {temperature}",
                         "try --temperature 2 (1 keeps the teacher's probabilities as they are)")
    if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise UsageError(f"--alpha must lie in [0, 1], got {alpha}",
                         "alpha weighs the teacher's soft labels against the hard labels: 0.5 weighs them equally")


def resolve_teacher(ref: str, store_root=None) -> tuple[list[Member], list, str]:
    """The teacher's members pinned, their metadata, and the pinned ref the engine gets."""
    from adapters.artifact import AdapterMeta, adapter_dir, store_ref
    from adapters.runtime.ensemble import ensemble_ref, is_ensemble, parse
    from adapters_store.errors import StoreError

    ensemble = parse(ref) if is_ensemble(ref) else None
    refs, weights = (ensemble.members, ensemble.weights) if ensemble else ((ref,), (1.0,))
    members, metas = [], []
    for member, weight in zip(refs, weights):
        try:
            path = adapter_dir(member, store_root)
            pinned = store_ref(member, store_root) or str(path.resolve())
        except (StoreError, LookupError, FileNotFoundError) as exc:
            raise UsageError(f"teacher '{member}' not found: {getattr(exc, 'message', exc)}",
                             "pass a store ref (name@prod, name@3) or an adapter directory as --teacher") from None
        meta = AdapterMeta.read(path)
        if meta.task != "classification":
            raise UsageError(f"teacher '{member}' is a {meta.task} adapter, not a classifier",
                             "distil from a classification adapter (or an ensemble of them)")
        if not meta.labels:
            raise UsageError(f"teacher '{member}' records no label names",
                             "distil from an adapter trained by `adapters train` (it records its labels)")
        digest = None
        if not Path(member).expanduser().is_dir():
            from adapters_store import Store

            with Store(store_root, create=False) as s:
                digest = s.resolve(member).digest
        members.append(Member(member, pinned, digest, weight))
        metas.append(meta)
    pinned_ref = ensemble_ref([m.pinned for m in members], [m.weight for m in members]) if ensemble \
        else members[0].pinned
    return members, metas, pinned_ref


def check_labels(teacher: list[str], student: list[str], ref: str) -> None:
    if set(teacher) != set(student):
        raise UsageError(f"teacher '{ref}' knows the labels {sorted(teacher)}, the student's data has "
                         f"{sorted(student)}",
                         "distil on data with the teacher's labels (or set data.labels to them)")


class TeacherPass:
    """The teacher's probabilities for rows of text, computed in batches on one engine, built on
    first use and remembered by text so a row is never classified twice."""

    def __init__(self, ref: str, meta, device: str, compute_dtype: str, store_root=None):
        self.ref, self.meta, self.device, self.compute_dtype = ref, meta, device, compute_dtype
        self.store_root = store_root
        self.engine = None
        self.known: dict[tuple[str, str | None], dict[str, float]] = {}

    def probabilities(self, texts: list[str], pairs: list[str] | None = None) -> list[dict[str, float]]:
        pairs = pairs if pairs is not None else [None] * len(texts)
        todo = sorted({(t, p) for t, p in zip(texts, pairs) if (t, p) not in self.known})
        if todo and self.engine is None:
            from adapters.runtime import Engine
            from adapters.runtime.resolvers import store_resolver

            self.engine = Engine(self.meta.base, quant=self.meta.quant or "none", device=self.device,
                                 compute_dtype=self.compute_dtype,
                                 resolver=store_resolver(self.store_root, allow_paths=True))
        for start in range(0, len(todo), BATCH):
            chunk = todo[start:start + BATCH]
            with_pairs = any(p is not None for _, p in chunk)
            rows = self.engine.classify([t for t, _ in chunk], adapter=self.ref,
                                        text_pairs=[p or "" for _, p in chunk] if with_pairs else None)
            for key, row in zip(chunk, rows):
                self.known[key] = row["probabilities"]
        return [self.known[(t, p)] for t, p in zip(texts, pairs)]

    def release(self) -> None:
        """Free the teacher's base before the student's loads."""
        self.engine = None
        import gc

        gc.collect()

    def soft_labels(self, splits) -> list[list[float]]:
        """``Distillation.teacher``: per train row, probabilities in the student's label order."""
        check_labels(self.meta.labels, splits.label_names, self.ref)
        train = splits.train
        pairs = train["text_pair"] if "text_pair" in train.column_names else None
        rows = self.probabilities(list(train["text"]), None if pairs is None else list(pairs))
        self.release()
        return [[row[label] for label in splits.label_names] for row in rows]


def _columns(table) -> list[str]:
    return table.column_names if not isinstance(table, dict) else list(table)


def label_with_teacher(cfg, teacher: TeacherPass, home: Path, raw: dict, sha: str) -> Path:
    """A copy of the unlabelled data (``raw``, as ``read_source`` read it, ``sha`` its digest) with
    the teacher's argmax as the label column: a directory of train (and dev/test, where the source
    has them) JSON-lines files, keyed by data and teacher."""
    data = cfg.data
    key = hashlib.sha256(json.dumps([sha, teacher.ref, data.text_column, data.text_pair_column,
                                     data.label_column]).encode()).hexdigest()[:16]
    out = home / "distill" / key
    if (out / "train.jsonl").is_file():
        return out
    train_texts = [str(t) for t in raw["train"][data.text_column]]
    train_pairs = [str(p) for p in raw["train"][data.text_pair_column]] if data.text_pair_column else None
    given = {max(p, key=p.get) for p in teacher.probabilities(train_texts, train_pairs)}
    if len(given) < 2:  # a classifier cannot learn from one class: say so before writing anything
        raise UsageError(f"teacher '{teacher.ref}' gives every row of {data.source} the label {sorted(given)}",
                         "distil on labelled data, or on text where the teacher tells classes apart")
    staging = out.with_name(out.name + ".tmp")
    staging.mkdir(parents=True, exist_ok=True)
    for split, table in raw.items():
        texts = [str(t) for t in table[data.text_column]]
        pairs = [str(p) for p in table[data.text_pair_column]] if data.text_pair_column else None
        rows = teacher.probabilities(texts, pairs)
        with open(staging / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for i, (text, probs) in enumerate(zip(texts, rows)):
                record = {data.text_column: text, data.label_column: max(probs, key=probs.get)}
                if pairs is not None:
                    record[data.text_pair_column] = pairs[i]
                fh.write(json.dumps(record) + "\n")
    staging.replace(out)
    return out


def distill(config, *, teacher: str, temperature: float = 2.0, alpha: float = 0.5,
            overrides: list[str] | None = None, store_root=None, **train_kwargs):
    """Train the student ``config`` on ``teacher``'s soft labels and store it; returns the
    ``TrainResult``. Its lineage's ``distill`` entry names the teacher (each member's ref, pinned
    version and digest, weight), the temperature, alpha and where the hard labels came from."""
    from adapters.api import _as_config, _check_before_loading
    from adapters.api import train as run_training
    from adapters.training.runs import home
    from adapters.training.trainer import Distillation

    check_settings(temperature, alpha)
    cfg = _as_config(config, overrides)
    if cfg.task != "classification":
        raise UsageError(f"distillation trains classifiers; the student config's task is {cfg.task}",
                         "use a classification config for the student (task: classification)")
    _check_before_loading(cfg, train_kwargs.get("output"))  # before the teacher's pass, not after it
    members, metas, pinned = resolve_teacher(teacher, store_root)
    teacher_pass = TeacherPass(pinned, metas[0], cfg.device, cfg.compute_dtype, store_root)
    from adapters.data.sources import read_source
    from adapters.training import distributed

    hard = "data"
    raw, sha = read_source(cfg.data.source, cfg.data.subset)
    if cfg.data.label_column not in _columns(raw["train"]):
        if cfg.data.labels is not None:
            check_labels(metas[0].labels, list(cfg.data.labels), teacher)
        distributed.join(cfg.device)  # under a distributed launch the main process alone labels
        source = str(distributed.on_main(lambda: label_with_teacher(cfg, teacher_pass, home(store_root), raw, sha)))
        teacher_pass.release()
        hard = "teacher"
        cfg = _as_config(cfg, [f"data.source={source}"])
    lineage = {"distill": {
        "teacher": {"ref": teacher, "pinned": pinned,
                    "members": [{"ref": m.ref, "version": m.pinned, "digest": m.digest, "weight": m.weight}
                                for m in members]},
        "temperature": temperature, "alpha": alpha, "hard_labels": hard}}
    return run_training(cfg, store_root=store_root, lineage=lineage,
                        distillation=Distillation(teacher_pass.soft_labels, temperature, alpha), **train_kwargs)
