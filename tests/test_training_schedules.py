"""``training.optimizer`` and ``training.lr_scheduler``: each schedule's learning rates equal the
reference implementation's (transformers' warm-up schedules, torch's StepLR / ExponentialLR), each
optimizer is the library's own, a run records and follows them, and what a device cannot run is
refused before anything is written."""

import pytest
import torch

import adapters
from adapters.artifact import AdapterMeta
from adapters.config import TrainingConfig
from adapters.errors import ConfigError
from adapters.training.optimizers import build_optimizer, build_scheduler, check_optimizer
from adapters.training.runs import read_events

from support.config import tiny_config

STEPS, PER_EPOCH = 40, 10


def _lrs(scheduler, steps: int = STEPS) -> list[float]:
    out = []
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        out.append(scheduler.get_last_lr()[0])
    return out


def _optimizer(lr: float = 0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize("name, reference", [
    ("linear", lambda o: __import__("transformers").get_linear_schedule_with_warmup(o, 4, STEPS)),
    ("cosine", lambda o: __import__("transformers").get_cosine_schedule_with_warmup(o, 4, STEPS, num_cycles=0.5)),
    ("constant", lambda o: __import__("transformers").get_constant_schedule_with_warmup(o, 4)),
])
def test_warmup_schedules_equal_transformers(name, reference):
    t = TrainingConfig(learning_rate=0.1, warmup_ratio=0.1, lr_scheduler=name)
    ours = build_scheduler(_optimizer(), t, STEPS, PER_EPOCH)
    assert _lrs(ours) == pytest.approx(_lrs(reference(_optimizer())), abs=1e-12)


def test_step_and_exponential_equal_torch():
    step = TrainingConfig(learning_rate=0.1, warmup_ratio=0.0, lr_scheduler={"name": "step", "step_size": 7,
                                                                             "gamma": 0.3})
    reference = torch.optim.lr_scheduler.StepLR(_optimizer(), step_size=7, gamma=0.3)
    assert _lrs(build_scheduler(_optimizer(), step, STEPS, PER_EPOCH)) == pytest.approx(_lrs(reference), rel=1e-9)
    # exponential: gamma per step_size steps, here per step, as torch's ExponentialLR
    smooth = TrainingConfig(learning_rate=0.1, warmup_ratio=0.0, lr_scheduler={"name": "exponential",
                                                                               "step_size": 1, "gamma": 0.9})
    reference = torch.optim.lr_scheduler.ExponentialLR(_optimizer(), gamma=0.9)
    assert _lrs(build_scheduler(_optimizer(), smooth, STEPS, PER_EPOCH)) == pytest.approx(_lrs(reference), rel=1e-9)
    # step_size defaults to one epoch of steps
    per_epoch = build_scheduler(_optimizer(), TrainingConfig(learning_rate=0.1, warmup_ratio=0.0,
                                                             lr_scheduler="step"), STEPS, PER_EPOCH)
    assert _lrs(per_epoch)[PER_EPOCH - 2: PER_EPOCH] == pytest.approx([0.1, 0.05])


def test_each_optimizer_is_the_librarys_own():
    from transformers.optimization import Adafactor

    groups = lambda: [{"params": [torch.nn.Parameter(torch.zeros(2))], "weight_decay": 0.0}]  # noqa: E731
    sgd = build_optimizer(groups(), TrainingConfig(optimizer={"name": "sgd", "momentum": 0.8}, learning_rate=0.2))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.8 and sgd.defaults["lr"] == 0.2
    assert type(build_optimizer(groups(), TrainingConfig())) is torch.optim.AdamW
    ada = build_optimizer(groups(), TrainingConfig(optimizer="adafactor", learning_rate=0.01))
    assert type(ada) is Adafactor and ada.defaults["lr"] == 0.01 and not ada.defaults["relative_step"]


def test_names_are_checked_and_paged_adamw_needs_cuda():
    with pytest.raises(ValueError, match="'cosine'"):
        TrainingConfig(lr_scheduler="cosin")
    with pytest.raises(ValueError, match="'sgd'"):
        TrainingConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="CUDA") as err:
        check_optimizer(TrainingConfig(optimizer="paged_adamw_8bit"), "cpu")
    assert "adamw" in err.value.hint
    check_optimizer(TrainingConfig(optimizer="paged_adamw_8bit"), "cuda")


def test_a_run_follows_and_records_its_schedule_and_optimizer(tiny_bert, sentiment_csv, tmp_path):
    training = {"max_steps": 6, "batch_size": 8, "log_every": 1, "learning_rate": 0.01, "warmup_ratio": 0.0,
                "optimizer": "sgd", "lr_scheduler": {"name": "step", "step_size": 2, "gamma": 0.5}}
    result = adapters.train(tiny_config(tiny_bert, sentiment_csv, training=training), output=tmp_path / "out",
                            run_dir=tmp_path / "run")
    lrs = [e["lr"] for e in read_events(result.run_dir / "events.jsonl") if e["event"] == "step"]
    assert lrs == pytest.approx([0.01, 0.005, 0.005, 0.0025, 0.0025, 0.00125])
    recorded = AdapterMeta.read(tmp_path / "out").lineage["training"]["training"]
    assert recorded["optimizer"]["name"] == "sgd" and recorded["lr_scheduler"]["name"] == "step"


def test_paged_adamw_on_the_cpu_writes_nothing(tiny_bert, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert, sentiment_csv, training={"optimizer": "paged_adamw_8bit"}, device="cpu")
    with pytest.raises(ConfigError, match="CUDA"):
        adapters.train(cfg, output=tmp_path / "out", run_dir=tmp_path / "run")
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
