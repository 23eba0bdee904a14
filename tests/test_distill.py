"""Distillation: the trainer's loss against an independent reference, the teacher's soft labels
against plain peft (one adapter and an ensemble), alpha = 0 against plain training, unlabelled data
labelled by the teacher, and bad input refused before anything is stored."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

import adapters
from adapters.cli.main import main
from adapters_store import Store

from support.config import tiny_config
from support.runtime import reference_classify_all, train


def test_distillation_loss_is_hintons():
    import torch.nn.functional as F

    from adapters.training.trainer import distillation_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g)
    teacher_logits = torch.randn(5, 3, generator=g)
    labels = torch.tensor([0, 2, 1, 1, 0])
    probs = torch.softmax(teacher_logits, -1)
    for t, alpha in ((1.0, 0.5), (2.0, 0.3), (4.0, 1.0), (3.0, 0.0)):
        ce = F.cross_entropy(logits, labels)
        kl = F.kl_div(F.log_softmax(logits / t, -1), F.softmax(teacher_logits / t, -1), reduction="batchmean")
        expected = alpha * t * t * kl + (1 - alpha) * ce
        assert torch.allclose(distillation_loss(logits, probs, ce, t, alpha), expected, atol=1e-6)


@pytest.mark.parametrize("temperature, alpha", [(0.0, 0.5), (-1.0, 0.5), (2.0, 1.5), (2.0, -0.1)])
def test_bad_settings_are_usage_errors(temperature, alpha):
    assert main(["distill", "--teacher", "t@1", "--config", "none.yaml", "--temperature", str(temperature),
                 "--alpha", str(alpha)]) == 2


HEAD = "base_model.model.classifier."


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_bert, sentiment_csv):
    """A store holding two tiny BERT sentiment classifiers (``teacher-a@1``, ``teacher-b@1``) and
    their directories, for the references."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("distill")
    dirs = {}
    reviews = texts(sentiment_csv)
    for i, name in enumerate(("teacher-a", "teacher-b")):
        dirs[name] = root / name
        shutil.copytree(train(root, f"distill-{name}", tiny_bert, sentiment_csv), dirs[name])
        # A confident teacher that splits the reviews in two: 2 training steps leave logits that
        # hardly depend on the text (a teacher that gives every review one class teaches nothing),
        # so the head is scaled up and its bias centred on the median review.
        path = dirs[name] / "adapter_model.safetensors"
        state = load_file(str(path))
        state[HEAD + "weight"] = state[HEAD + "weight"] * (3000.0 + 1000 * i)
        save_file(state, str(path), metadata={"format": "pt"})
        margin = torch.tensor([math.log(p["rotten"] / p["fresh"])
                               for p in reference_classify_all(path.parent, reviews, "none", compute_dtype="float32")])
        state[HEAD + "bias"] = state[HEAD + "bias"] - torch.tensor([0.0, float(margin.median())])
        save_file(state, str(path), metadata={"format": "pt"})
    store = root / "store"
    with Store(store) as s:
        for name, path in dirs.items():
            s.import_dir(path, name)
    return store, dirs


def student(tiny_bert, data, tmp_path, training=None, **over) -> str:
    training = training or {"epochs": 1, "batch_size": 16, "max_steps": 4, "learning_rate": 1e-2, "seed": 3,
                            "log_every": 1}
    cfg = tiny_config(tiny_bert, data, name="student", lora={"r": 2, "alpha": 4}, training=training, **over)
    path = tmp_path / "student.yaml"
    path.write_text(json.dumps(cfg))
    return str(path)


def texts(csv_path) -> list[str]:
    with open(csv_path, newline="") as fh:
        return [row["review"] for row in csv.DictReader(fh)]


def test_soft_labels_are_the_ensembles_weighted_mean_of_plain_peft(teachers, sentiment_csv):
    from adapters.experiments.distill import TeacherPass, resolve_teacher

    store, dirs = teachers
    members, metas, pinned = resolve_teacher("ensemble:teacher-a*0.7+teacher-b@1*0.3", store)
    assert [m.pinned for m in members] == ["teacher-a@1", "teacher-b@1"] and pinned.startswith("ensemble:")
    with Store(store) as s:
        assert [m.digest for m in members] == [s.resolve("teacher-a@1").digest, s.resolve("teacher-b@1").digest]
    sample = texts(sentiment_csv)[::30]
    got = TeacherPass(pinned, metas[0], "cpu", "float32", store).probabilities(sample)
    a_all, b_all = (reference_classify_all(dirs[n], sample, "none", compute_dtype="float32")
                    for n in ("teacher-a", "teacher-b"))
    for row, a, b in zip(got, a_all, b_all):
        for label in a:
            assert row[label] == pytest.approx(0.7 * a[label] + 0.3 * b[label], abs=1e-5)


def test_alpha_zero_trains_exactly_as_plain_training_and_lineage_pins_the_teacher(
        teachers, tiny_bert, sentiment_csv, tmp_path, capsys):
    store, _ = teachers
    config = student(tiny_bert, sentiment_csv, tmp_path)
    plain = adapters.train(config, output=tmp_path / "plain", run_dir=tmp_path / "run-plain", progress=False)

    code = main(["distill", "--teacher", "teacher-a", "--config", config, "--alpha", "0", "--json",
                 "--store", str(store)])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["distill"]["teacher"]["pinned"] == "teacher-a@1" and out["distill"]["hard_labels"] == "data"
    assert out["distill"]["alpha"] == 0 and out["distill"]["temperature"] == 2
    with Store(store) as s:
        version = s.resolve(out["ref"])
        assert version.lineage["distill"]["teacher"]["members"][0]["digest"] == s.resolve("teacher-a@1").digest
        distilled = load_file(str(s.path(out["ref"]) / "adapter_model.safetensors"))
    reference = load_file(str(plain.output_dir / "adapter_model.safetensors"))
    assert distilled.keys() == reference.keys()
    for key in reference:  # the KL term weighs 0: the same steps on the same batches
        torch.testing.assert_close(distilled[key], reference[key], rtol=0, atol=1e-6, msg=key)
    assert out["metrics"]["dev"]["loss"] == pytest.approx(plain.metrics["dev"]["loss"], abs=1e-6)


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shuffled", [False, True])
def test_soft_labels_reach_the_loss_row_by_row(tiny_bert, sentiment_csv, tmp_path, shuffled, compute_dtype):
    """A teacher whose probabilities are each row's own label, one-hot, at T = 1 and alpha = 1 makes
    the KL term exactly the cross-entropy: the weights must equal plain training's, through length
    grouping and shuffling. The same labels given to the wrong rows must not. Both compute dtypes
    run on every CPU: "auto" picks float32 on AVX2-only CPUs and bfloat16 on AVX512-BF16 ones."""
    from adapters.training.trainer import Distillation

    def one_hot(splits):
        labels = list(splits.train["label"])
        if shuffled:
            labels = labels[1:] + labels[:1]
        return [[1.0 if j == label else 0.0 for j in range(len(splits.label_names))] for label in labels]

    config = student(tiny_bert, sentiment_csv, tmp_path, compute_dtype=compute_dtype)
    plain = adapters.train(config, output=tmp_path / "plain", run_dir=tmp_path / "run-plain", progress=False)
    taught = adapters.train(config, output=tmp_path / "taught", run_dir=tmp_path / "run-taught", progress=False,
                            distillation=Distillation(one_hot, temperature=1.0, alpha=1.0))
    reference = load_file(str(plain.output_dir / "adapter_model.safetensors"))
    weights = load_file(str(taught.output_dir / "adapter_model.safetensors"))
    gap = max(float((weights[k] - reference[k]).abs().max()) for k in reference)
    if shuffled:
        assert gap > 1e-3
    else:
        assert gap < 1e-5


def test_unlabelled_text_is_labelled_by_the_teacher(teachers, tiny_bert, sentiment_csv, tmp_path, capsys):
    store, dirs = teachers
    unlabelled = tmp_path / "unlabelled.csv"
    sample = texts(sentiment_csv)
    with open(unlabelled, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review"])
        writer.writerows([t] for t in sample)
    config = student(tiny_bert, unlabelled, tmp_path)
    code = main(["distill", "--teacher", "teacher-a@1", "--config", config, "--json", "--store", str(store)])
    assert code == 0, capsys.readouterr()
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["distill"]["hard_labels"] == "teacher"

    # The labelled copy: every row once, with the teacher's argmax (plain peft) as its label.
    (copy,) = (store / "distill").glob("*/train.jsonl")
    written = {}
    for split in copy.parent.glob("*.jsonl"):
        for line in split.read_text().splitlines():
            row = json.loads(line)
            written[row["review"]] = row["sentiment"]
    assert set(written) == set(sample)
    for text, probs in zip(sample[::20], reference_classify_all(dirs["teacher-a"], sample[::20], "none",
                                                                  compute_dtype="float32")):
        assert written[text] == max(probs, key=probs.get)
    assert len(set(written.values())) == 2
    with Store(store) as s:
        assert s.resolve(out["ref"]).metrics["dev"]


def test_data_with_other_labels_is_refused_and_nothing_is_stored(teachers, tiny_bert, tmp_path, capsys):
    store, _ = teachers
    other = tmp_path / "other.csv"
    other.write_text("review,sentiment\n" + "".join(f"film {i},{'good' if i % 2 else 'bad'}\n" for i in range(40)))
    with Store(store) as s:
        before = [(v.name, v.number) for v in s.list()]
    code = main(["distill", "--teacher", "teacher-a@1", "--config", student(tiny_bert, other, tmp_path),
                 "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2
    assert "['fresh', 'rotten']" in err and "['bad', 'good']" in err and "Traceback" not in err
    with Store(store) as s:
        assert [(v.name, v.number) for v in s.list()] == before


@pytest.mark.parametrize("teacher, message", [("nobody@1", "teacher 'nobody@1' not found"),
                                              ("ensemble:teacher-a+nobody", "teacher 'nobody' not found")])
def test_a_missing_teacher_is_a_usage_error(teachers, tiny_bert, sentiment_csv, tmp_path, capsys, teacher, message):
    store, _ = teachers
    code = main(["distill", "--teacher", teacher, "--config", student(tiny_bert, sentiment_csv, tmp_path),
                 "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
