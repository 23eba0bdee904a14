"""From normalized splits to model inputs: tokenization, padding collator, length-grouped batches.

Label conventions follow transformers: ``labels`` is an int per row for classification, and a list
aligned with ``input_ids`` for causal-lm / token-classification where -100 marks positions the loss
ignores (the prompt, padding, non-first sub-tokens of a word).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from adapters.base.loading import format_prompt
from adapters.errors import DataError
from adapters.tasks import TASKS

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_CHUNK = 1000  # rows per tokenizer call: fast tokenizers batch internally


def tokenize(splits, tokenizer, max_length: int) -> dict[str, Any]:
    """Tokenize train/dev/test of a ``Splits``; returns split name -> datasets.Dataset."""
    import datasets

    task = TASKS[splits.task]
    encode = task.encode()
    if task.labels == "token" and not getattr(tokenizer, "is_fast", False):
        raise DataError("token classification needs a fast tokenizer (it maps sub-tokens to words)",
                        "use a base whose tokenizer has a tokenizer.json (AutoTokenizer use_fast=True)")
    out = {}
    for name in ("train", "dev", "test"):
        ds = getattr(splits, name)
        columns: dict[str, list] = {}
        for start in range(0, len(ds), _CHUNK):
            encoded = encode(ds[start:start + _CHUNK], tokenizer, max_length)
            for key, values in encoded.items():
                columns.setdefault(key, []).extend(values)
        if not columns.get("input_ids"):
            raise DataError(
                f"the {name} split has no rows left after tokenization with max_length={max_length}",
                "raise data.max_length: every prompt was at least max_length tokens long")
        columns["length"] = [len(ids) for ids in columns["input_ids"]]
        out[name] = datasets.Dataset.from_dict(columns)
    return out


def encode_classification(batch: dict, tokenizer, max_length: int) -> dict[str, list]:
    enc = tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length)
    columns = {key: enc[key] for key in MODEL_INPUTS if key in enc}
    columns["labels"] = list(batch["label"])
    return columns


def encode_causal(batch: dict, tokenizer, max_length: int) -> dict[str, list]:
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompts = [format_prompt(tokenizer, p) for p in batch["prompt"]]
    # A chat template already writes the special tokens; the plain template gets the tokenizer's
    # usual ones (e.g. BOS).
    prompt_ids = tokenizer(prompts, add_special_tokens=not chat)["input_ids"]
    # The response is tokenized on its own and appended, rather than tokenizing prompt+response as
    # one string: that way the prompt tokens are exactly those format_prompt gives at inference,
    # and the prompt/response boundary is exact even where BPE could merge across it.
    response_ids = tokenizer(batch["response"], add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    columns: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    dropped = 0
    for p_ids, r_ids in zip(prompt_ids, response_ids):
        if len(p_ids) >= max_length:  # the response would be cut away entirely: nothing to learn
            dropped += 1
            continue
        ids = (p_ids + r_ids + eos)[:max_length]
        columns["input_ids"].append(ids)
        columns["attention_mask"].append([1] * len(ids))
        columns["labels"].append(([IGNORE_INDEX] * len(p_ids) + r_ids + eos)[:max_length])
    if dropped:
        log.warning("dropped %d rows whose prompt fills max_length=%d", dropped, max_length)
    return columns


def encode_tokens(batch: dict, tokenizer, max_length: int) -> dict[str, list]:
    try:
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True,
                        max_length=max_length)
    except Exception as exc:  # byte-level BPE tokenizers refuse pre-split words without this flag
        if "add_prefix_space" in str(exc):
            raise DataError(f"this tokenizer cannot take pre-split words: {exc}",
                            "load the tokenizer with add_prefix_space=True") from None
        raise
    columns = {key: enc[key] for key in MODEL_INPUTS if key in enc}
    columns["labels"] = []
    for row, tags in enumerate(batch["tags"]):
        labels, previous = [], None
        # Only a word's first sub-token carries its tag; the rest and special tokens are ignored,
        # so the loss and the metrics count each word once.
        for word in enc.word_ids(row):
            labels.append(tags[word] if word is not None and word != previous else IGNORE_INDEX)
            previous = word
        columns["labels"].append(labels)
    return columns


class Collator:
    """Pads a list of tokenized rows to the longest in the batch and returns torch tensors."""

    def __init__(self, tokenizer, task: str, pad_to_multiple_of: int | None = None):
        self.task = task
        self.pad_to_multiple_of = pad_to_multiple_of
        pad = tokenizer.pad_token_id
        # Causal LMs often have no pad token; padded positions are masked anyway, so EOS will do.
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        self.pad_type_id = getattr(tokenizer, "pad_token_type_id", 0) or 0
        self.left = getattr(tokenizer, "padding_side", "right") == "left"

    def _pad(self, rows: list[list[int]], width: int, value: int) -> list[list[int]]:
        if self.left:
            return [[value] * (width - len(r)) + r for r in rows]
        return [r + [value] * (width - len(r)) for r in rows]

    def __call__(self, features: list[dict]) -> dict:
        import torch

        rows = {key: [list(map(int, f[key])) for f in features] for key in MODEL_INPUTS
                if key in features[0]}
        width = max(len(r) for r in rows["input_ids"])
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        fill = {"input_ids": self.pad_id, "attention_mask": 0, "token_type_ids": self.pad_type_id}
        batch = {key: torch.tensor(self._pad(r, width, fill[key]), dtype=torch.long)
                 for key, r in rows.items()}
        if "labels" in features[0]:
            if TASKS[self.task].labels == "row":
                batch["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
            else:
                labels = [list(map(int, f["labels"])) for f in features]
                batch["labels"] = torch.tensor(self._pad(labels, width, IGNORE_INDEX), dtype=torch.long)
        if "teacher" in features[0]:  # a teacher's class probabilities per row (distillation)
            batch["teacher"] = torch.tensor([list(map(float, f["teacher"])) for f in features], dtype=torch.float32)
        return batch


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                           shuffle: bool = True) -> list[list[int]]:
    """Batches of row indices whose rows have similar lengths (less padding).

    The megabatch trick of transformers' LengthGroupedSampler: shuffle, cut into megabatches of
    50 batches, sort each by length (longest first), cut into batches, then shuffle the batch order.
    Randomness stays (which rows meet in a megabatch, batch order) while padding drops. The same
    (seed, epoch) gives the same batches. As in transformers, the batch holding the longest row
    goes first: a batch size that does not fit in memory fails in the first step, not an hour in,
    and the allocator reserves the largest activations first, so later, smaller batches reuse that
    memory instead of growing the heap around it (4-bit MiniLM LoRA on the CPU, the first 30
    batches of rt-minilm-lora: peak RSS 1,856 MiB with the longest batch first, 2,170 MiB when it
    came 29th). shuffle=False (evaluation): all rows sorted by length, longest first, no randomness.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(-lengths, kind="stable").tolist()
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = 50 * batch_size
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start:start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")].tolist()
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches
