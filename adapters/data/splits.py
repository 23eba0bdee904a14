"""Training data: read it from wherever it lives, map its columns to roles, split, balance.

``load_splits(cfg, task)`` is the one entry point. Whatever the source (CSV / JSONL / Parquet file,
a ``save_to_disk`` directory, a directory of train/dev/test files, an HF hub dataset, a built-in
sample), the result has the same normalized columns per task, the roles and features of its
``adapters.tasks`` entry:

    classification        text, [text_pair], label (int id into label_names)
    causal-lm             prompt, response
    token-classification  tokens (list[str]), tags (list[int] ids into label_names)

Tables are handled as plain ``{column: list}`` dicts in between: the data sets this tool trains on
are small, and plain lists keep splitting and balancing obvious. Every random choice draws from a
generator seeded by ``cfg.split.seed`` so a config always yields the same rows (and fingerprint).
Reading sources lives in ``adapters.data.sources``, tokenization and batching in
``adapters.data.batching``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters.config import DataConfig
from adapters.data.sources import Table, read_source
from adapters.errors import DataError
from adapters.tasks import TASKS

log = logging.getLogger(__name__)

# Bump when loading or splitting changes which rows a config selects: old fingerprints then no
# longer claim to describe the new data.
FINGERPRINT_VERSION = 1


@dataclass
class Splits:
    train: Any  # datasets.Dataset (imported lazily: `adapters --help` must stay light)
    dev: Any
    test: Any
    task: str
    label_names: list[str] | None
    columns: dict[str, str]
    fingerprint: str
    sizes: dict[str, int]
    class_balance: dict[str, dict[str, int]]
    source: str


def load_splits(cfg: DataConfig, task: str, adapter_labels: bool = False) -> Splits:
    """``adapter_labels``: ``cfg.labels`` are a trained adapter's own (scoring it); data labelled
    with anything else is refused, where for training ``data.labels`` selects rows."""
    if task not in TASKS:
        raise DataError(f"unknown task '{task}'", "task is one of: " + ", ".join(TASKS))
    columns = column_mapping(cfg, task)
    raw, content_sha = read_source(cfg.source, cfg.subset)
    parts: dict[str, Table] = {}
    for name, table in raw.items():
        part = _normalize(_select(table, columns, cfg.source, name), task, name)
        if name != "train" and _rows(table) and not part[next(iter(part))]:
            # Hub convention: hidden test labels are stored as -1. Such a split is no split.
            log.warning("the %s split has no labelled rows; cutting %s from train instead", name, name)
            continue
        parts[name] = part
    label_names = _encode_labels(parts, task, cfg, adapter_labels)
    parts = _fill_splits(parts, task, cfg)

    sub_rng = np.random.default_rng([cfg.split.seed, 1])
    if cfg.split.folds:
        # The dev folds must partition the pool: max_train_samples caps the pool before it is
        # folded, and max_eval_samples the test split alone.
        parts = _apply_fold(parts, task, cfg, label_names, sub_rng)
        if cfg.max_eval_samples:
            parts["test"] = _subsample(parts["test"], cfg.max_eval_samples, task, sub_rng)
    else:
        if cfg.max_train_samples:
            parts["train"] = _subsample(parts["train"], cfg.max_train_samples, task, sub_rng)
        if cfg.max_eval_samples:
            for name in ("dev", "test"):
                parts[name] = _subsample(parts[name], cfg.max_eval_samples, task, sub_rng)
    for name in ("train", "dev", "test"):
        if not _rows(parts[name]):
            raise DataError(
                f"the {name} split of {cfg.source} is empty after splitting and filtering",
                "use more rows, raise data.split.dev / data.split.test, or check data.labels "
                "and data.max_*_samples")

    balance: dict[str, dict[str, int]] = {}
    role = TASKS[task].label_role
    if TASKS[task].labels == "row":
        if cfg.oversample:
            balance["train_original"] = _balance(parts["train"][role], label_names)
            parts["train"] = _oversample(parts["train"], role, np.random.default_rng([cfg.split.seed, 2]))
        for name in ("train", "dev", "test"):
            balance[name] = _balance(parts[name][role], label_names)
        # Scoring an existing classifier may meet data with one class; training on it may not.
        present = [name for name, n in balance["train"].items() if n]
        if len(present) < 2 and not adapter_labels:
            raise DataError(
                f"the training split of {cfg.source} has only one class ({_listed(present) or 'none'}) "
                f"in the label column '{getattr(cfg, column_field(role))}'",
                "a classifier needs at least two labels: check data.label_column and data.labels")

    fingerprint = hashlib.sha256(json.dumps({
        "version": FINGERPRINT_VERSION, "content": content_sha, "task": task, "columns": columns,
        "labels": cfg.labels, "split": cfg.split.model_dump(), "oversample": cfg.oversample,
        "max_train_samples": cfg.max_train_samples, "max_eval_samples": cfg.max_eval_samples,
    }, sort_keys=True).encode()).hexdigest()
    datasets = {name: _to_dataset(parts[name], task) for name in ("train", "dev", "test")}
    return Splits(train=datasets["train"], dev=datasets["dev"], test=datasets["test"], task=task,
                  label_names=label_names, columns=columns, fingerprint=fingerprint,
                  sizes={name: len(ds) for name, ds in datasets.items()}, class_balance=balance,
                  source=cfg.source)


def column_field(role: str) -> str:
    """The DataConfig field that names a role's column (for messages: "set data.text_column")."""
    return f"{role}_column"


def column_mapping(cfg: DataConfig, task: str) -> dict[str, str]:
    """role -> the user's column name, for the roles this task needs."""
    mapping = {role: getattr(cfg, column_field(role)) for role in TASKS[task].roles}
    return {role: col for role, col in mapping.items() if col is not None}


# ----------------------------------------------------------------------- columns and labels


def _rows(table: Any) -> int:
    """Row count of a {column: list} table or a datasets.Dataset."""
    return len(table) if not isinstance(table, dict) else len(next(iter(table.values()), []))


def _select(table: Any, columns: dict[str, str], source: str, split: str) -> Table:
    """Pick the mapped columns (renamed to their roles); hub ClassLabel ids become their names."""
    available = list(table.column_names if not isinstance(table, dict) else table)
    for role, col in columns.items():
        if col not in available:
            field = column_field(role)
            unmapped = [c for c in available if c not in columns.values()]
            guess = (difflib.get_close_matches(col, available, n=1) or unmapped or available or ["?"])[0]
            raise DataError(
                f"column '{col}' (the {role} column) not found in {source} ({split} split); "
                f"available columns: {', '.join(available) or '(none)'}",
                f"set data.{field} to the column that holds the {role}, e.g. --set data.{field}={guess}")
    if isinstance(table, dict):
        return {role: table[col] for role, col in columns.items()}
    out = {}
    for role, col in columns.items():
        values = table[col]
        feature = table.features[col]
        inner = getattr(feature, "feature", None)
        if hasattr(feature, "int2str"):
            names = feature.names
            values = [names[v] if v is not None and v >= 0 else None for v in values]
        elif hasattr(inner, "int2str"):
            values = [None if v is None else [inner.names[t] for t in v] for v in values]
        out[role] = list(values)
    return out


def _label_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, float):
        if value != value:  # NaN: a missing cell
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)


def _words(value: Any) -> list | None:
    if value is None:
        return None
    return value.split() if isinstance(value, str) else list(value)


def _normalize(table: Table, task: str, split: str) -> Table:
    """Clean values per role, by the role's feature type; drop rows that miss a value any role
    needs. Labels stay strings here (ids come in _encode_labels)."""
    features = {role: kind for role, kind in TASKS[task].features.items() if role in table}
    clean = {}
    for role, kind in features.items():
        if kind == "string":
            clean[role] = [None if v is None else str(v) for v in table[role]]
        elif kind == "int64":
            clean[role] = [_label_str(v) for v in table[role]]
        else:
            clean[role] = [_words(v) for v in table[role]]
    lists = [role for role, kind in features.items() if kind.startswith("list[")]
    for first, other in zip(lists, lists[1:]):  # one tag per word
        for i, (a, b) in enumerate(zip(clean[first], clean[other])):
            if a is not None and b is not None and len(a) != len(b):
                raise DataError(f"row {i} of the {split} split has {len(a)} {first} but {len(b)} {other}",
                                f"every row needs as many {other} as {first}, one for each")
    for role in lists:
        if features[role] == "list[string]":
            clean[role] = [None if not t else [str(w) for w in t] for t in clean[role]]
        else:
            clean[role] = [None if t is None else [_label_str(x) for x in t] for t in clean[role]]
    keep = [i for i in range(_rows(clean)) if all(clean[r][i] is not None for r in clean)]
    if len(keep) < _rows(clean):
        log.info("%s split: dropped %d rows with missing values", split, _rows(clean) - len(keep))
    return _take(clean, keep)


def _label_order(labels: set[str]) -> list[str]:
    # Integer labels keep their numeric order, so a label "3" keeps id 3 when labels are 0..n-1.
    if all(re.fullmatch(r"-?\d+", x) for x in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _bio_order(tags: set[str]) -> list[str]:
    """O first, then per entity type its B- and I- tags."""
    def key(tag: str) -> tuple:
        prefix, _, kind = tag.partition("-")
        return (tag != "O", kind or prefix, prefix)
    return sorted(tags, key=key)


def _listed(names) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:20])
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")


def _encode_labels(parts: dict[str, Table], task: str, cfg: DataConfig,
                   adapter_labels: bool = False) -> list[str] | None:
    """Replace label strings by ids (in place); return the label names, index = id."""
    kind, role = TASKS[task].labels, TASKS[task].label_role
    if kind is None:
        return None
    if cfg.labels is not None and len(set(cfg.labels)) != len(cfg.labels):
        raise DataError(f"data.labels has duplicates: {cfg.labels}", "list each label once")
    column = getattr(cfg, column_field(role))
    if kind == "row":
        present = {x for part in parts.values() for x in part[role]}
        names = list(cfg.labels) if cfg.labels is not None else _label_order(present)
        ids = {name: i for i, name in enumerate(names)}
        unknown = _label_order(present - set(ids)) if present - set(ids) else []
        # Scoring: a row of a label the adapter never learnt cannot be scored, and leaving it out
        # would report metrics on part of the data. Training: data.labels selects rows, unless it
        # selects none at all.
        if unknown and (adapter_labels or not present & set(ids)):
            if adapter_labels:
                raise DataError(
                    f"the label column '{column}' of {cfg.source} has labels the adapter does not "
                    f"know: {_listed(unknown)}; the adapter knows {_listed(names)}",
                    "score it on data labelled with the adapter's labels, or point --set data.label_column= "
                    "at the column that holds them")
            raise DataError(
                f"no row of {cfg.source} has a label in data.labels ({_listed(names)}); the label column "
                f"'{column}' holds {_listed(unknown)}",
                "fix data.labels, or point data.label_column at the column that holds those labels")
        for part in parts.values():
            keep = [i for i, x in enumerate(part[role]) if x in ids]
            part.update(_take(part, keep))
            part[role] = [ids[x] for x in part[role]]
        return names
    present = {t for part in parts.values() for tags in part[role] for t in tags}
    names = list(cfg.labels) if cfg.labels is not None else _bio_order(present)
    ids = {name: i for i, name in enumerate(names)}
    unknown = sorted(present - set(ids))
    if unknown and "O" not in ids:
        raise DataError(f"tags not in data.labels: {', '.join(unknown)}",
                        "add them to data.labels, or include 'O' so unlisted tags become O")
    for part in parts.values():
        # Tags left out of data.labels become O: that is how one restricts the entity types.
        part[role] = [[ids.get(t, ids.get("O")) for t in tags] for tags in part[role]]
    return names


# ------------------------------------------------------------------ splitting and balancing


def _take(table: Table, index) -> Table:
    return {col: [values[i] for i in index] for col, values in table.items()}


def _pick(labels: list | None, n: int, k: int, rng: np.random.Generator,
          keep_one: bool) -> tuple[list[int], list[int]]:
    """Choose k of n row indices, proportionally per label when labels are given.

    Each class gets floor(share) rows, the rest go to the classes with the largest remainders
    (ties broken by the seeded generator), so the total is exactly k. With keep_one every class
    keeps at least one row out of the pick (a single-row class stays in train). Returns the
    picked and the remaining indices, both in original order.
    """
    if labels is None:
        order = rng.permutation(n)
        return sorted(order[:k].tolist()), sorted(order[k:].tolist())
    by_class: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    groups = [rng.permutation(members).tolist() for _, members in sorted(by_class.items())]
    sizes = np.array([len(g) for g in groups])
    caps = sizes - 1 if keep_one else sizes
    exact = sizes * k / n
    quota = np.minimum(np.floor(exact).astype(int), caps)
    order = np.lexsort((rng.random(len(groups)), -(exact - np.floor(exact))))
    while quota.sum() < k and (quota < caps).any():
        for g in order:
            if quota.sum() < k and quota[g] < caps[g]:
                quota[g] += 1
    picked = sorted(i for g, q in zip(groups, quota) for i in g[:q])
    chosen = set(picked)
    return picked, [i for i in range(n) if i not in chosen]


def _fill_splits(parts: dict[str, Table], task: str, cfg: DataConfig) -> dict[str, Table]:
    """Cut the splits the data did not bring from train (test first, then dev)."""
    train = parts["train"]
    total = _rows(train)
    rng = np.random.default_rng(cfg.split.seed)
    for name, fraction in (("test", cfg.split.test), ("dev", cfg.split.dev)):
        if name in parts or (name == "dev" and cfg.split.folds):  # with folds, dev is a fold
            continue
        n = _rows(train)
        k = min(n, max(1, int(total * fraction + 0.5)))
        labels = train[TASKS[task].label_role] if TASKS[task].labels == "row" else None
        picked, rest = _pick(labels, n, k, rng, keep_one=True)
        parts[name], train = _take(train, picked), _take(train, rest)
    parts["train"] = train
    return parts


# ------------------------------------------------------------------------------- k-fold


def fold_key(task: str, label_names: list[str] | None, row_labels: list) -> list[str] | None:
    """What a task's folds are stratified on, one value per row.

    classification: the row's label. token-classification: each row is a sentence, so folds are
    grouped by sentence by construction; they are stratified on the sentence's first entity type
    ("" for a sentence without one), which keeps every entity type, and the sentences with none,
    in every fold in the pool's proportion (a set of types would make most combinations too rare
    to stratify on; the first one is a single key with as many values as there are types).
    causal-lm: None, plain KFold: a prompt/response row has no label to stratify on.
    """
    if TASKS[task].labels == "row":
        return [label_names[label] for label in row_labels]
    if TASKS[task].labels != "token":
        return None
    kinds = []
    for tags in row_labels:
        names = [label_names[t] for t in tags if label_names[t] != "O"]
        kinds.append(names[0].partition("-")[2] or names[0] if names else "")
    return kinds


def fold_indices(keys: list[str] | None, n: int, folds: int, seed: int) -> list[list[int]]:
    """The dev rows of each of ``folds`` folds of ``n`` rows: scikit-learn's StratifiedKFold on
    ``keys`` (KFold when None), shuffled with ``seed``."""
    import warnings

    from sklearn.model_selection import KFold, StratifiedKFold

    if keys is None:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
        return [sorted(dev.tolist()) for _, dev in splitter.split(np.zeros(n))]
    names = list(keys)
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    # A key with fewer rows than folds cannot be in every fold; StratifiedKFold warns about it and
    # refuses when every key is that rare. Such keys are stratified together as one, and that one,
    # when still too rare, with the most common key.
    rare = {k for k, c in counts.items() if c < folds}
    if rare:
        log.warning("%d label(s) or entity type(s) have fewer rows than the %d folds (%s): not every "
                    "fold has them",
                    len(rare), folds, _listed(sorted(rare)))
        common = max(counts, key=lambda k: (counts[k], k))
        merged = common if sum(counts[k] for k in rare) < folds else "\0rare"
        names = [merged if name in rare else name for name in names]
    codes = {name: i for i, name in enumerate(sorted(set(names)))}
    y = np.array([codes[name] for name in names])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [sorted(dev.tolist()) for _, dev in splitter.split(np.zeros(n), y)]


def _row_key(table: Table, i: int) -> str:
    return json.dumps([table[col][i] for col in sorted(table)], ensure_ascii=False)


def _apply_fold(parts: dict[str, Table], task: str, cfg: DataConfig, label_names: list[str] | None,
                rng: np.random.Generator) -> dict[str, Table]:
    """Pool train and dev, fold the pool, and make fold ``cfg.split.fold`` the dev split."""
    split = cfg.split
    pool = {col: values + parts["dev"][col] for col, values in parts["train"].items()} \
        if "dev" in parts else parts["train"]
    if cfg.max_train_samples:
        pool = _subsample(pool, cfg.max_train_samples, task, rng)
    # Sorted by content: the folds depend on which rows the pool holds, not on their order in
    # the file or on whether dev came with the data or was cut.
    pool = _take(pool, sorted(range(_rows(pool)), key=lambda i: _row_key(pool, i)))
    n = _rows(pool)
    if n < split.folds:
        raise DataError(f"{split.folds} folds need at least {split.folds} rows of train and dev data; "
                        f"{cfg.source} has {n}", "use fewer folds, or more rows")
    role = TASKS[task].label_role
    keys = fold_key(task, label_names, pool[role]) if role else None
    if split.fold == "all":
        return {**parts, "train": pool, "dev": pool}
    dev = fold_indices(keys, n, split.folds, split.seed)[split.fold]
    chosen = set(dev)
    return {**parts, "train": _take(pool, [i for i in range(n) if i not in chosen]), "dev": _take(pool, dev)}


def _subsample(table: Table, k: int, task: str, rng: np.random.Generator) -> Table:
    n = _rows(table)
    if n <= k:
        return table
    labels = table[TASKS[task].label_role] if TASKS[task].labels == "row" else None
    return _take(table, _pick(labels, n, k, rng, keep_one=False)[0])


def _oversample(table: Table, role: str, rng: np.random.Generator) -> Table:
    """Repeat rows of the smaller classes (of the ``role`` column) until every class has as many
    rows as the largest."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(table[role]):
        by_class.setdefault(label, []).append(i)
    target = max(len(m) for m in by_class.values())
    index = list(range(_rows(table)))
    for label in sorted(by_class):
        members = by_class[label]
        extra = target - len(members)
        index += members * (extra // len(members))
        index += rng.choice(members, extra % len(members), replace=False).tolist()
    # Shuffle so that copies are not all at the end, in case a consumer reads in order.
    return _take(table, rng.permutation(index).tolist())


def _balance(labels: list[int], label_names: list[str]) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(label_names))
    return {name: int(c) for name, c in zip(label_names, counts)}


def _feature(kind: str):
    """A registry feature name ("string", "list[int64]") as a datasets feature."""
    from datasets import List, Value

    return List(_feature(kind[len("list["):-1])) if kind.startswith("list[") else Value(kind)


def _to_dataset(table: Table, task: str):
    import datasets
    from datasets import Features

    features = TASKS[task].features
    return datasets.Dataset.from_dict(table, features=Features({c: _feature(features[c]) for c in table}))
