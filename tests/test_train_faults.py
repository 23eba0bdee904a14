"""Faults and bad input on the training side, through the real ``adapters`` entry point (a
subprocess) where a user would meet them: each gives exit 2 (or a hinted error) naming what is
wrong and what to do, no traceback, and nothing half-done left visible (no stored version, no
run directory, no run shown as finished that did not end with a stored adapter)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import adapters
from adapters.training.runs import read_events

from support.config import tiny_config

LABELS = ["bad", "good"]


def _rows(n: int, labels=("good", "bad")) -> list[tuple[str, str]]:
    subjects = ["the film", "this movie", "the plot", "the cast"]
    word = {"good": "great", "bad": "awful", "left": "port", "right": "starboard", "meh": "fine"}
    return [(f"{word[y]} {subjects[i % len(subjects)]} {word[y]}", y)
            for i, y in enumerate(list(labels) * (n // len(labels)))]


def _csv(path: Path, rows, header=("review", "sentiment")) -> Path:
    path.write_text(",".join(header) + "\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return path


def _fast(base, data, **over) -> dict:
    """A config that trains in about a second on the tiny base."""
    over.setdefault("training", {})
    over["training"] = {"max_steps": 2, "batch_size": 8, "eval_batch_size": 64, "log_every": 1,
                        **over["training"]}
    return tiny_config(base, data, data={"source": str(data), "max_length": 16, **over.pop("data", {})}, **over)


def _config_file(tmp_path: Path, cfg: dict, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(home: Path, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed entry point, as a user runs it, against the test's own store."""
    env = {**os.environ, "ADAPTERS_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "adapters", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _refused(proc: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit 2 with an error and a hint that say each of ``expected``; no traceback."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert "error:" in err and "hint:" in err, err
    flat = " ".join(err.split())  # rich wraps long lines
    for text in expected:
        assert text in flat, (text, flat)


def _nothing_written(home: Path, *outputs: Path) -> None:
    runs = list((home / "runs").iterdir()) if (home / "runs").exists() else []
    versions = list((home / "versions").rglob("adapter_config.json")) if (home / "versions").exists() else []
    assert not runs and not versions, (runs, versions)
    for out in outputs:
        assert not out.exists(), out


def _store_names(home: Path) -> list[str]:
    from adapters_store import Store

    if not (home / "store.db").exists():
        return []
    with Store(home) as s:
        return [v.ref for v in s.list()]


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    return _csv(tmp_path_factory.mktemp("faults-data") / "reviews.csv", _rows(48))


@pytest.fixture(scope="module")
def other_bert(tmp_path_factory, tiny_bert) -> Path:
    """A base of another size (hidden 16 instead of 32) with the same tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("other-bert")
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert, data_csv) -> Path:
    """A LoRA classifier (labels bad, good) on tiny_bert, with our lineage."""
    root = tmp_path_factory.mktemp("trained")
    result = adapters.train(_fast(tiny_bert, data_csv, name="parent"), output=root / "adapter",
                            run_dir=root / "run", store=False)
    return result.output_dir


@pytest.fixture(scope="module")
def plain_peft(tmp_path_factory, trained) -> Path:
    """The same adapter as a plain PEFT directory made elsewhere: no lineage, no label map."""
    path = tmp_path_factory.mktemp("plain") / "adapter"
    shutil.copytree(trained, path)
    for name in ("adapter_manager.json", "label_map.json", "training_config.yaml"):
        (path / name).unlink()
    return path


@pytest.fixture(scope="module")
def pickled(tmp_path_factory, trained) -> Path:
    """The adapter with its weights only as adapter_model.bin (a pickle), as older peft saved them."""
    import torch
    from safetensors.torch import load_file

    path = tmp_path_factory.mktemp("pickled") / "adapter"
    shutil.copytree(trained, path)
    torch.save(load_file(path / "adapter_model.safetensors"), path / "adapter_model.bin")
    (path / "adapter_model.safetensors").unlink()
    return path


# ------------------------------------------------------------------------------------ --resume


def test_resume_picks_only_a_run_of_the_same_name(tiny_bert, data_csv, tmp_path, monkeypatch, _isolated_home):
    """An interrupted run of ``sig-int`` is not a run of ``sig``: resuming ``sig`` must not take it
    (it would store sig-int's weights as sig@1)."""
    from adapters.cli.main import main
    from adapters.training import trainer
    from adapters.training.runs import latest_unfinished_run

    real_after_eval = trainer.Trainer._after_eval
    calls = []

    def crash_on_the_second_evaluation(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return real_after_eval(self, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "_after_eval", crash_on_the_second_evaluation)
    config = _config_file(tmp_path, _fast(tiny_bert, data_csv, name="sig-int",
                                          training={"max_steps": 4, "eval_every": 2}))
    with pytest.raises(RuntimeError, match="power cut"):
        main(["train", str(config), "-q"])
    (run,) = list((_isolated_home / "runs").iterdir())
    assert (run / "checkpoint" / "state.pt").is_file()

    proc = cli(_isolated_home, "train", config, "--name", "sig", "--resume", "-q")
    _refused(proc, "no interrupted run of 'sig'", "without --resume")
    assert _store_names(_isolated_home) == []
    assert list((_isolated_home / "runs").iterdir()) == [run]
    # The run is still there for its own name, dashes and all.
    assert latest_unfinished_run("sig-int", _isolated_home) == run
    assert latest_unfinished_run("sig", _isolated_home) is None
    assert latest_unfinished_run("int", _isolated_home) is None


# ------------------------------------------------------------------------------ training input


def _parquet(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(24)
    pq.write_table(pa.table({"review": [t for t, _ in rows], "sentiment": [y for _, y in rows]}), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64  # a damaged page in the middle
    del data[-12:]  # and a lost footer
    path.write_bytes(bytes(data))
    return path


def _latin1_csv(path: Path) -> Path:
    text = "review,sentiment\n" + "".join(f"{t},{y}\n" for t, y in _rows(24))
    path.write_bytes(text.encode() + "caf\xe9 great film,good\n".encode("latin-1"))
    return path


def _nul_csv(path: Path) -> Path:
    rows = _rows(24)
    rows[3] = ("great\0 film", "good")  # line 5: the header is line 1
    return _csv(path, rows)


def _empty_dev(path: Path) -> Path:
    path.mkdir()
    _csv(path / "train.csv", _rows(24))
    _csv(path / "dev.csv", [])
    return path


BAD_INPUT = {
    "invalid UTF-8": (_latin1_csv, "data.csv", ["data.csv is not UTF-8", "line 26", "save the file as UTF-8"]),
    "corrupt Parquet": (_parquet, "data.parquet", ["data.parquet is not a readable Parquet file", "write it again"]),
    "header only": (lambda p: _csv(p, []), "data.csv", ["data.csv is empty", "header but no data rows",
                                                         "add labelled rows"]),
    "empty dev.csv": (_empty_dev, "folder", ["dev.csv is empty", "remove it so that the dev split is cut from train"]),
    "NUL byte": (_nul_csv, "data.csv", ["data.csv has a NUL character at line 5", "remove the NUL characters"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_training_file_is_refused_naming_it(case, tiny_bert, tmp_path, _isolated_home):
    make, filename, expected = BAD_INPUT[case]
    source = make(tmp_path / filename)
    config = _config_file(tmp_path, _fast(tiny_bert, source))
    proc = cli(_isolated_home, "train", config, "--output", tmp_path / "out", "-q")
    _refused(proc, *expected)
    assert "available columns" not in proc.stderr and "text_column" not in proc.stderr
    _nothing_written(_isolated_home, tmp_path / "out")


def test_csv_with_a_nul_byte_is_refused_not_trained_on(tmp_path):
    """Without a subprocess: the data layer itself refuses it, whatever calls it."""
    from adapters.config import DataConfig
    from adapters.data.splits import load_splits
    from adapters.errors import DataError

    with pytest.raises(DataError, match="NUL character at line 5"):
        load_splits(DataConfig(source=str(_nul_csv(tmp_path / "d.csv")), text_column="review",
                               label_column="sentiment"), "classification")


def _utf16(path: Path) -> Path:
    path.write_text("review,sentiment\n" + "".join(f"{t},{y}\n" for t, y in _rows(8)), encoding="utf-16")
    return path


def _utf16_no_bom(path: Path) -> Path:
    path.write_bytes(("review,sentiment\n" + "".join(f"{t},{y}\n" for t, y in _rows(8))).encode("utf-16-le"))
    return path


def _damaged_gzip(path: Path) -> Path:
    import gzip

    data = gzip.compress(("review,sentiment\n" + "".join(f"{t},{y}\n" for t, y in _rows(40))).encode())
    path.write_bytes(data[:len(data) // 2])
    return path


@pytest.mark.parametrize("make,name,expected", [
    (_utf16, "d.csv", "is UTF-16 text"), (_utf16_no_bom, "d.csv", "looks like UTF-16"),
    (_damaged_gzip, "d.csv.gz", "cannot read"), (lambda p: (p.write_text(""), p)[1], "d.jsonl", "is empty"),
])
def test_more_unreadable_files_are_refused_by_the_data_layer(make, name, expected, tmp_path):
    from adapters.config import DataConfig
    from adapters.data.splits import load_splits
    from adapters.errors import DataError

    source = make(tmp_path / name)
    with pytest.raises(DataError) as err:
        load_splits(DataConfig(source=str(source), text_column="review", label_column="sentiment"),
                    "classification")
    assert expected in err.value.message and name in err.value.message and err.value.hint


# --------------------------------------------------------------------------- data.split shares


def test_split_shares_summing_to_one_are_refused_before_training(tiny_bert, data_csv, tmp_path, _isolated_home):
    config = _config_file(tmp_path, _fast(tiny_bert, data_csv))
    proc = cli(_isolated_home, "train", config, "--set", "data.split.dev=0.1", "--set", "data.split.test=0.9", "-q")
    _refused(proc, "data.split", "sum to 1", "keep their sum below 1")
    _nothing_written(_isolated_home)
    assert _store_names(_isolated_home) == []


@pytest.mark.parametrize("dev,test,ok", [(0.1, 0.9, False), (0.5, 0.6, False), (0.45, 0.45, True)])
def test_split_shares_validation(dev, test, ok):
    from adapters.config import load_config
    from adapters.errors import ConfigError

    raw = {"name": "x", "base": "b", "data": {"source": "d.csv", "split": {"dev": dev, "test": test}}}
    if ok:
        assert load_config(raw=raw).data.split.dev == dev
    else:
        with pytest.raises(ConfigError, match="leaving nothing to train on"):
            load_config(raw=raw)


# ------------------------------------------------------------- adapters on the wrong base, pickles


def _in_process(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI's own ``main`` in this process (its model is loaded faster here): same code path,
    same exit code and stderr, read back like a subprocess's."""
    from adapters.cli.main import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_predict_and_eval_refuse_an_adapter_of_another_model_size(plain_peft, other_bert, data_csv, capsys,
                                                                 _isolated_home):
    proc = cli(_isolated_home, "predict", plain_peft, "a great film", "--base", other_bert)
    _refused(proc, "does not fit base", "size mismatch", "load it on the base it was trained for")
    proc = _in_process(capsys, "eval", plain_peft, "--base", other_bert, "--data", data_csv,
                       "--set", "data.text_column=review", "--set", "data.label_column=sentiment",
                       "--set", "data.labels=[bad, good]")
    _refused(proc, "does not fit base", "size mismatch")


def test_predict_and_eval_refuse_pickled_weights_and_say_how_to_convert_safely(pickled, data_csv, capsys,
                                                                             _isolated_home):
    for proc in (cli(_isolated_home, "predict", pickled, "a great film"),
                 _in_process(capsys, "eval", pickled, "--data", data_csv)):
        _refused(proc, "adapter_model.bin", "pickle", "save_pretrained(dir, safe_serialization=True)")
        assert "weights_only" not in proc.stderr


def test_engine_load_refuses_both_with_a_hinted_error(plain_peft, pickled, tiny_bert, other_bert):
    from adapters.errors import UsageError
    from adapters.runtime import READY, Engine

    engine = Engine(str(other_bert), quant="none", device="cpu")
    with pytest.raises(UsageError) as wrong_base:
        engine.load(str(plain_peft))
    assert wrong_base.value.hint and "does not fit this base" in wrong_base.value.hint
    engine = Engine(str(tiny_bert), quant="none", device="cpu")
    with pytest.raises(UsageError) as pickle_only:
        engine.load(str(pickled))
    assert "safe_serialization=True" in pickle_only.value.hint
    assert "weights_only" not in pickle_only.value.message + pickle_only.value.hint
    assert engine.load(str(plain_peft)).state == READY  # the right base still takes it


# ------------------------------------------------------------------------------------ init_from


def _three_labels(tmp_path: Path) -> Path:
    return _csv(tmp_path / "three.csv", _rows(48, labels=("good", "bad", "meh")))


INIT_FROM = {
    "another base": (lambda d, b, t: {"base": str(b)}, ["trained on base", "other weights", "base: "]),
    "another method": (lambda d, b, t: {"method": "prefix"}, ["it is a lora adapter, the config asks for prefix",
                                                              "method: lora"]),
    "another label count": (lambda d, b, t: {"data": {"source": str(_three_labels(t))}},
                            ["knows 2 labels ('bad', 'good'), this data has 3", "data.labels: [bad, good]"]),
    "another task": (lambda d, b, t: {"task": "token-classification"}, ["it is a classification adapter"]),
}


@pytest.mark.parametrize("case", list(INIT_FROM))
def test_init_from_an_incompatible_parent_is_refused_up_front(case, trained, tiny_bert, other_bert, data_csv,
                                                              tmp_path, _isolated_home):
    from adapters.errors import UsageError

    change, expected = INIT_FROM[case]
    cfg = _fast(tiny_bert, data_csv, name="child", init_from=str(trained))
    over = change(data_csv, other_bert, tmp_path)
    cfg = {**cfg, **{k: ({**cfg[k], **v} if isinstance(v, dict) else v) for k, v in over.items()}}
    with pytest.raises(UsageError) as err:
        adapters.train(cfg, output=tmp_path / "out")
    text = " ".join(f"{err.value.message} {err.value.hint}".split())
    assert "cannot be trained further" in text and "drop init_from" in text, text
    for piece in expected:
        assert piece in text, (piece, text)
    _nothing_written(_isolated_home, tmp_path / "out")


def test_init_from_refusal_through_the_cli(trained, plain_peft, other_bert, data_csv, tmp_path, _isolated_home):
    config = _config_file(tmp_path, _fast(other_bert, data_csv, name="child", init_from=str(trained)))
    _refused(cli(_isolated_home, "train", config, "-q"), "cannot be trained further", "trained on base")
    _nothing_written(_isolated_home)
    # A plain PEFT parent records no base: its tensors tell, and it is refused all the same.
    cfg = _fast(other_bert, data_csv, name="child", init_from=str(plain_peft))
    from adapters.errors import UsageError

    with pytest.raises(UsageError, match="does not fit base"):
        adapters.train(cfg, output=tmp_path / "out")
    _nothing_written(_isolated_home, tmp_path / "out")


def test_init_from_a_pickled_parent_is_refused(pickled, tiny_bert, data_csv, tmp_path, _isolated_home):
    from adapters.errors import UsageError

    with pytest.raises(UsageError) as err:
        adapters.train(_fast(tiny_bert, data_csv, name="child", init_from=str(pickled)), output=tmp_path / "out")
    assert "pickle" in err.value.message and "safe_serialization=True" in err.value.hint
    _nothing_written(_isolated_home, tmp_path / "out")


# ------------------------------------------------------------------------------ eval and metrics


def test_eval_on_labels_the_adapter_does_not_know(trained, tmp_path, _isolated_home):
    other = _csv(tmp_path / "sides.csv", _rows(20, labels=("left", "right")), header=("review", "side"))
    proc = cli(_isolated_home, "eval", trained, "--data", other, "--set", "data.label_column=side")
    _refused(proc, "labels the adapter does not know: 'left', 'right'", "the adapter knows 'bad', 'good'",
             "data.label_column")
    assert "only one class" not in proc.stderr


def test_eval_refuses_data_with_some_unknown_labels(trained, tmp_path):
    from adapters.errors import DataError
    from adapters.evaluation.score import score_adapter

    mixed = _csv(tmp_path / "mixed.csv", _rows(30, labels=("good", "bad", "meh")))
    with pytest.raises(DataError, match="does not know: 'meh'"):
        score_adapter(trained, data=str(mixed), split="all")


def test_macro_averages_follow_scikit_learn_over_the_labels_present(trained, tmp_path):
    """Scored on data of one class only, the averages are scikit-learn's for the labels present,
    computed here independently from the (true, predicted) pairs in the confusion matrix."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    from adapters.evaluation.metrics import classification_metrics
    from adapters.evaluation.score import score_adapter

    only_good = _csv(tmp_path / "good.csv", _rows(16, labels=("good",)))
    m = score_adapter(trained, data=str(only_good), split="all")
    pairs = [(t, p) for t, row in enumerate(m["confusion_matrix"]) for p, n in enumerate(row) for _ in range(n)]
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    assert len(pairs) == m["rows"] == 16
    for ours, reference in (("f1_macro", f1_score), ("precision_macro", precision_score),
                            ("recall_macro", recall_score)):
        assert m[ours] == pytest.approx(reference(y_true, y_pred, average="macro", zero_division=0)), ours
    assert m["f1_weighted"] == pytest.approx(f1_score(y_true, y_pred, average="weighted", zero_division=0))
    assert set(m["per_class"]) == set(LABELS)  # every class still reported, in the adapter's order

    # A class absent from both sides does not count, a class only predicted does (as in sklearn).
    names = ["a", "b", "c", "d"]
    for y_true, y_pred in (([0, 0, 1, 1], [0, 0, 1, 1]), ([0, 0, 1, 1], [0, 2, 1, 1]), ([1, 1, 1], [1, 1, 0])):
        m = classification_metrics(y_true, y_pred, names)
        assert m["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
        assert m["recall_macro"] == pytest.approx(recall_score(y_true, y_pred, average="macro", zero_division=0))
    assert classification_metrics([0, 0, 1], [0, 0, 1], names)["f1_macro"] == 1.0


# ---------------------------------------------------------------------- a store that fails to put


def test_a_store_failure_after_training_marks_the_run_failed(tiny_bert, data_csv, tmp_path):
    """Training ends, then the store cannot take the version (here its database path is a
    directory): a hinted error, no version, and the run's log ends as failed, so it is neither
    listed as a finished result nor lost for --resume. A stored run's log ends finished, with its ref."""
    from adapters.training.runs import latest_unfinished_run
    from adapters_tui.runs import RunWatcher

    home = tmp_path / "home"
    (home / "store.db").mkdir(parents=True)
    config = _config_file(tmp_path, _fast(tiny_bert, data_csv, name="unstored"))
    proc = cli(home, "train", config, "-q")
    err = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "training finished but the adapter could not be stored" in err, err
    assert "hint:" in err and "adapters import" in err and "--resume" in err, err

    (run,) = list((home / "runs").iterdir())
    ends = [e for e in read_events(run / "events.jsonl") if e["event"] == "end"]
    # Never logged as finished, not even for a moment: a watcher could have shown it as a result.
    assert [e["status"] for e in ends] == ["failed"], ends
    assert "could not be stored" in ends[0]["error"]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()  # kept, named in the hint
    watcher = RunWatcher(home / "runs")
    watcher.poll()
    assert watcher.runs[run.name].status == "failed"
    assert latest_unfinished_run("unstored", home) == run


def test_a_stored_run_logs_finished_with_its_ref(tiny_bert, data_csv, _isolated_home):
    result = adapters.train(_fast(tiny_bert, data_csv, name="kept"))
    ends = [e for e in read_events(result.run_dir / "events.jsonl") if e["event"] == "end"]
    assert [(e["status"], e.get("ref")) for e in ends] == [("finished", "kept@1")]
    assert _store_names(_isolated_home) == ["kept@1"]


def test_eval_of_a_peft_directory_without_label_names_asks_for_them(plain_peft, tiny_bert, data_csv, capsys):
    args = ["eval", plain_peft, "--base", tiny_bert, "--data", data_csv, "--split", "all", "--json",
            "--set", "data.text_column=review", "--set", "data.label_column=sentiment"]
    _refused(_in_process(capsys, *args), "records no label names", "its head has 2 outputs",
             "--set 'data.labels=[label0, label1]'")
    _refused(_in_process(capsys, *args, "--set", "data.labels=[bad, good, meh]"), "has 2 outputs")
    proc = _in_process(capsys, *args, "--set", "data.labels=[bad, good]")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 48
    # predict needs no names: the head is built with as many outputs as the saved one
    assert adapters.load(str(tiny_bert), plain_peft).predict(["a great film"])[0]["label"] in (0, 1)


def test_init_from_a_peft_directory_with_another_head_size(plain_peft, tiny_bert, tmp_path, _isolated_home):
    from adapters.errors import UsageError

    cfg = _fast(tiny_bert, _three_labels(tmp_path), name="child", init_from=str(plain_peft))
    with pytest.raises(UsageError, match="its head has 2 outputs, this data has 3 labels"):
        adapters.train(cfg, output=tmp_path / "out")
    _nothing_written(_isolated_home, tmp_path / "out")


@pytest.mark.parametrize("through", ["cli", "api"])
def test_an_output_folder_holding_other_files_is_refused_before_training(through, tiny_bert, data_csv, tmp_path,
                                                                          _isolated_home):
    """Checked once, before torch loads: nothing of the folder is touched, no run is started."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    cfg = _fast(tiny_bert, data_csv, name="out-check")
    if through == "cli":
        _refused(cli(_isolated_home, "train", _config_file(tmp_path, cfg), "--output", out, "-q"),
                 f"output directory {out} exists and is not an adapter directory", "choose an empty or new --output")
    else:
        from adapters.errors import UsageError

        with pytest.raises(UsageError, match="is not an adapter directory"):
            adapters.train(cfg, output=out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    _nothing_written(_isolated_home)
