"""One readable training loop on accelerate, for every method and task.

``accelerate launch -m adapters train ...`` runs the same loop on several GPUs. Each run
writes a JSONL event log (start, step, eval, checkpoint, end) that the TUI and other tools tail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapters.artifact import CONFIG_FILE, AdapterMeta, build_lineage, save_adapter
from adapters.base.device import plan_device
from adapters.base.loading import load_base_model, load_model_config, load_tokenizer
from adapters.base.resolve import resolve_base, weights_fingerprint
from adapters.config import TrainConfig
from adapters.data import batching as B
from adapters.data import splits as D
from adapters.errors import ConfigError, UsageError
from adapters.evaluation.loop import evaluate
from adapters.evaluation.metrics import METRIC_DIRECTIONS
from adapters.tasks import TASKS
from adapters.training import distributed
from adapters.training.methods import attach
from adapters.training.optimizers import build_optimizer, build_scheduler, check_optimizer
from adapters.training.runs import EVENTS_FILE, RunLog, latest_checkpoint


@dataclass
class LoopState:
    """Where the loop is: saved with every checkpoint (``trainer.json``; the best weights so far,
    ``best_state``, in ``state.pt``), so ``--resume`` continues from the same batch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of the current epoch already done
    best: float | None = None  # the best dev value of the stopping metric so far
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the best one (early stopping's patience)
    history: list[dict] = field(default_factory=list)
    best_state: dict | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "best_state"}

    @classmethod
    def from_json(cls, data: dict, best_state: dict | None) -> LoopState:
        return cls(**data, best_state=best_state)


@dataclass
class TrainResult:
    name: str
    run_id: str
    output_dir: Path
    run_dir: Path
    metrics: dict = field(default_factory=dict)  # {"dev": {...}, "test": {...}}
    ref: str | None = None  # the store ref ("name@3"), once stored
    digest: str | None = None  # the stored version's content id
    lineage: dict = field(default_factory=dict)


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def _param_groups(model, weight_decay: float) -> list[dict]:
    """Parameter groups: no weight decay on biases and normalization weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lowered = name.lower()
        (no_decay if lowered.endswith("bias") or "norm" in lowered else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _MaskMul(torch.autograd.Function):
    """``x * mask`` that saves only the mask for backward (the mask already holds 0 or 1/(1-p))."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class CpuDropout(torch.nn.Dropout):
    """``nn.Dropout`` for CPU training: the same distribution (each element kept independently
    with probability 1-p, exact to 2**-32, and scaled by 1/(1-p)), about 3x cheaper.

    Why: on the CPU torch's dropout draws every element's Bernoulli one at a time from mt19937
    (``aten::bernoulli_``, 12-17 ns an element here), then divides and multiplies in two more
    passes. A LoRA run drops out every adapted layer's input (peft: one mask per LoRA layer) on
    top of the base's own dropouts: 50 dropout calls a step for MiniLM-L6 with LoRA on
    query/key/value/dense, about 20M elements at batch 32, length ~28. Profiled (torch.profiler,
    1 thread, ``benchmarks throughput``) ``bernoulli_`` was a third of a whole training step
    (253 of 751 ms), the largest single cost, above every matmul. Here the bits come from numpy's
    SFC64 in bulk (~1.2 ns an element), become the scaled float mask in one numpy pass (55 ms a
    step in all), and the mask is applied and saved for backward as torch's CPU dropout does (its
    noise tensor is also a float of the input's shape, so memory is the same).

    Seeded from torch's default generator on every call, so ``torch.manual_seed`` (set_seed) and
    the RNG state a checkpoint saves make runs exactly reproducible as before; the random stream
    differs from torch's. Eval mode, p=0, in-place, non-float or non-CPU inputs use nn.Dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or not 0 < self.p < 1 or self.inplace or x.device.type != "cpu"
                or not x.is_floating_point()):
            return super().forward(x)
        import numpy as np

        n = x.numel()
        seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64).item())
        bits = np.random.Generator(np.random.SFC64(seed)).bit_generator.random_raw((n + 1) // 2)
        bits = bits.view(np.uint32)[:n]
        threshold = np.uint32(min(round(self.p * 2**32), 2**32 - 1))  # P(drop) = threshold / 2**32
        keep = np.multiply(bits >= threshold, np.float32(1.0 / (1.0 - self.p)), dtype=np.float32)
        return _MaskMul.apply(x, torch.from_numpy(keep).view(x.shape).to(x.dtype))


def use_cpu_dropout(model) -> int:
    """Make every plain ``nn.Dropout`` of ``model`` a ``CpuDropout`` (same p, same behaviour in
    eval mode); returns how many. For CPU training only: CUDA has a fused dropout kernel."""
    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout:
            module.__class__ = CpuDropout
            swapped += 1
    return swapped


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in model.named_parameters() if v.requires_grad}


def _load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device))


def check_metric(cfg: TrainConfig) -> None:
    stopping = cfg.training.early_stopping
    if stopping is None:
        return
    allowed = TASKS[cfg.task].stopping_metrics
    if stopping.metric not in allowed:
        raise ConfigError(f"training.early_stopping.metric '{stopping.metric}' is not reported for task {cfg.task}",
                          "choose one of: " + ", ".join(allowed))
    expected = METRIC_DIRECTIONS.get(stopping.metric)
    if expected and expected != stopping.mode:
        raise ConfigError(f"training.early_stopping.mode is '{stopping.mode}' but {stopping.metric} is better when "
                          f"{'higher' if expected == 'max' else 'lower'}",
                          f"set training.early_stopping.mode: {expected}")


@dataclass(frozen=True)
class Distillation:
    """Train on a teacher's soft labels (Hinton et al., 2015, "Distilling the Knowledge in a
    Neural Network"): the loss becomes ``distillation_loss`` instead of the model's own.

    ``teacher`` gets the run's ``Splits`` once, before the student loads, and returns the teacher's
    class probabilities (at temperature 1) for every row of the train split, in the order of
    ``splits.label_names``; the trainer keeps them as a ``teacher`` column of the tokenized train
    split. ``alpha`` weighs the soft term against the hard labels' cross-entropy."""

    teacher: Callable[[D.Splits], list[list[float]]]
    temperature: float = 1.0
    alpha: float = 0.5


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, hard_loss: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * hard_loss``,
    the KL averaged over the rows. ``teacher`` holds probabilities: their logs are the teacher's
    logits up to a per-row constant, which softmax ignores, so this also fits an ensemble, whose
    probabilities are a mixture with no logits of its own. T^2 keeps the soft term's gradients
    on the scale of the hard term's whatever T is (Hinton et al., section 2)."""
    t = float(temperature)
    student = torch.log_softmax(logits.float() / t, dim=-1)
    # clamp: a probability that underflowed to 0 would give log 0 = -inf; 1e-30 still rounds to 0 below.
    target = torch.softmax(torch.log(teacher.float().clamp_min(1e-30)) / t, dim=-1)
    kl = torch.nn.functional.kl_div(student, target, reduction="batchmean")
    return alpha * t * t * kl + (1 - alpha) * hard_loss


def step_loss(model, batch: dict, distillation: Distillation | None = None) -> torch.Tensor:
    """The loss one training step minimises: the model's own on the hard labels, or, when the
    batch carries the teacher's probabilities, the distillation loss built on it."""
    if "teacher" not in batch:
        return model(**batch).loss
    out = model(**{k: v for k, v in batch.items() if k != "teacher"})
    if distillation is None:
        raise ValueError("a batch with a teacher column needs a Distillation (temperature, alpha)")
    return distillation_loss(out.logits, batch["teacher"], out.loss, distillation.temperature, distillation.alpha)


@contextlib.contextmanager
def _random_state_kept():
    """Run the block without moving the random generators set_seed seeded: a teacher's pass
    (its model init) must not change the student's head init, dropout or shuffling."""
    import numpy as np

    saved = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(saved[0])
    np.random.set_state(saved[1])


class Trainer:
    """Holds one run's state so the loop below reads top to bottom."""

    def __init__(self, cfg: TrainConfig, output_dir: Path, run_dir: Path, resume: bool = False,
                 progress: bool = True, init_from: str | None = None, parent: str | None = None,
                 callback=None, lineage: dict | Callable[[dict], dict] | None = None,
                 distillation: Distillation | None = None):
        """``init_from``: the directory of the adapter to continue; ``parent``: how the lineage
        names it (its store ref; by default the directory's absolute path); ``lineage``: entries
        the caller adds to the lineage, or a function of the run's metrics that returns them;
        ``distillation``: train on a teacher's soft labels (classification only)."""
        self.cfg, self.output_dir, self.run_dir = cfg, Path(output_dir), Path(run_dir)
        self.resume, self.show_progress, self.init_from = resume, progress, init_from or cfg.init_from
        self.parent = parent or (str(Path(self.init_from).resolve()) if self.init_from else None)
        self.callback = callback  # gets every run-log event as it is written
        self.extra_lineage = lineage
        self.distillation = distillation
        check_metric(cfg)
        if distillation is not None and TASKS[cfg.task].labels != "row":
            raise UsageError(f"distillation trains classifiers; this config's task is {cfg.task}",
                             "distil into a classification config (task: classification)")

    # ---- setup -------------------------------------------------------------------------------
    def prepare(self) -> None:
        cfg = self.cfg
        from accelerate import Accelerator

        self.plan = plan_device(cfg.device, cfg.compute_dtype)
        check_optimizer(cfg.training, self.plan.device)
        set_seed(cfg.training.seed)
        self.base = resolve_base(cfg.base)
        model_config = load_model_config(self.base, cfg.task)  # checked to fit the task: before the data
        self.fingerprint = weights_fingerprint(self.base.path)
        parent = Path(self.init_from) if self.init_from else None
        shown = cfg.init_from or str(self.init_from)
        if parent:  # method, task, base: before the data, whose columns depend on the task
            check_parent_fits(parent, cfg, self.fingerprint, None, shown)
        self.splits = D.load_splits(cfg.data, cfg.task)
        if parent:
            check_parent_fits(parent, cfg, self.fingerprint, self.splits.label_names, shown)
        self.tokenizer = load_tokenizer(self.base, cfg.task)
        self.tokenized = B.tokenize(self.splits, self.tokenizer, cfg.data.max_length)
        if self.distillation is not None:  # before the student loads: the two are never resident together
            self.tokenized["train"] = self.tokenized["train"].add_column("teacher", self._teacher_targets())
        self.collator = B.Collator(self.tokenizer, cfg.task)
        model, heads = load_base_model(self.base, cfg.task, cfg.quant, self.plan, self.splits.label_names,
                                       config=model_config, pad_token_id=self.tokenizer.pad_token_id)
        self.model = self._with_adapter(model, heads)
        if self.plan.device == "cpu":
            use_cpu_dropout(self.model)  # torch's CPU dropout was ~1/3 of a LoRA step (CpuDropout)
        cuda_bf16 = self.plan.device == "cuda" and self.plan.compute_dtype == torch.bfloat16
        self.accelerator = Accelerator(
            cpu=self.plan.device == "cpu",
            gradient_accumulation_steps=cfg.training.gradient_accumulation,
            mixed_precision="bf16" if cuda_bf16 else "no",
        )
        t = cfg.training
        # batch_size rows per process: each optimizer step takes a global batch of that times the
        # processes, so N processes take 1/N of the steps.
        self.global_batch = t.batch_size * self.accelerator.num_processes
        self.steps_per_epoch = math.ceil(len(self.tokenized["train"]) / self.global_batch / t.gradient_accumulation)
        self.total_steps = t.max_steps or max(1, math.ceil(self.steps_per_epoch * t.epochs))
        optimizer = build_optimizer(_param_groups(self.model, t.weight_decay), t)
        # The schedule counts optimizer steps and is stepped with the optimizer (_step), not through
        # accelerate, which would step it once per process on every step.
        self.scheduler = build_scheduler(optimizer, t, self.total_steps, self.steps_per_epoch)
        self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)

    def _teacher_targets(self) -> list[list[float]]:
        with _random_state_kept():  # one teacher pass, not one per process
            targets = distributed.on_main(lambda: self.distillation.teacher(self.splits))
        targets = [list(map(float, row)) for row in targets]
        rows, labels = len(self.tokenized["train"]), len(self.splits.label_names)
        if len(targets) != rows or any(len(row) != labels for row in targets):
            raise ValueError(f"the teacher gave {len(targets)} rows of probabilities for {rows} training rows "
                             f"of {labels} labels")
        return targets

    def _with_adapter(self, model, heads):
        if not self.init_from:
            return attach(model, self.cfg, heads)
        from adapters.inference import attach_adapter

        # check_parent_fits has compared what the parent records; this catches what only its
        # tensors tell (a plain PEFT directory made for another model size).
        return attach_adapter(model, Path(self.init_from), self.cfg.base, is_trainable=True)

    # ---- checkpoints for --resume --------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def save_checkpoint(self, state: LoopState) -> None:
        """Staged in checkpoint.tmp, then swapped in through checkpoint.old: a kill at any point
        leaves a whole checkpoint in checkpoint/ or, between the two renames, in checkpoint.old/
        (the one the log's last ``checkpoint`` event names; see latest_checkpoint)."""
        staging = self.run_dir / "checkpoint.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        unwrapped = self.accelerator.unwrap_model(self.model)
        torch.save({"trainable": _trainable_state(unwrapped), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "best_state": state.best_state,
                    "torch_rng": torch.get_rng_state()}, staging / "state.pt")
        (staging / "trainer.json").write_text(json.dumps(state.to_json()))
        old = self.run_dir / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.checkpoint_dir.exists():
            os.replace(self.checkpoint_dir, old)
        os.replace(staging, self.checkpoint_dir)
        shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self) -> LoopState | None:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return None
        if path != self.checkpoint_dir:  # back in place, so the next save's swap keeps a whole one
            os.replace(path, self.checkpoint_dir)
            path = self.checkpoint_dir
        saved = torch.load(path / "state.pt", weights_only=True)
        _load_trainable_state(self.accelerator.unwrap_model(self.model), saved["trainable"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        return LoopState.from_json(json.loads((path / "trainer.json").read_text()), saved["best_state"])

    # ---- the loop ------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[list[int]]:
        """This process's rows of each global batch (all of them in a single process); the global
        batches are the same in every process, seeded by the epoch."""
        t, size = self.cfg.training, self.global_batch
        lengths = self.tokenized["train"]["length"]
        if t.group_by_length:
            batches = B.length_grouped_batches(lengths, size, t.seed, epoch)
        else:
            order = list(range(len(lengths)))
            random.Random(t.seed + epoch).shuffle(order)
            batches = [order[i:i + size] for i in range(0, len(order), size)]
        processes, index = self.accelerator.num_processes, self.accelerator.process_index
        return batches if processes == 1 else [distributed.shard(b, processes, index) for b in batches]

    def _evaluate(self, split: str) -> dict:
        unwrapped = self.accelerator.unwrap_model(self.model)
        result = evaluate(unwrapped, self.tokenized[split], self.collator, self.cfg.task, self.splits.label_names,
                          self.cfg.training.eval_batch_size, self.accelerator.device)
        self.model.train()
        return result

    def run(self, keep: Callable[[TrainResult], None] | None = None) -> TrainResult:
        """Validate and load everything, then train. Bad input caught while preparing (a
        ``UsageError``: config, data, base, device) writes nothing at all, not even the run
        directory; any failure after that keeps the log, ended with ``status: failed`` (or
        ``cancelled`` on Ctrl+C) and the error, for diagnosis and ``--resume``.

        ``keep`` (storing the adapter) runs once the adapter is written and before the log says
        ``finished``: a run whose result could not be kept ends as failed, never as finished."""
        run_id, events = self.run_dir.name, self.run_dir / EVENTS_FILE
        try:
            self.prepare()
        except UsageError:
            raise
        except BaseException as exc:  # a crash or Ctrl+C while loading: no bad input, so keep a trace
            _log_end(self._log(events), exc, name=self.cfg.name)
            raise
        log = self._log(events)  # creates the run directory
        try:
            result = self._loop(log, run_id)
            if keep is not None and distributed.is_main():
                keep(result)
            result = distributed.from_main(result)
        except BaseException as exc:
            _log_end(log, exc, name=self.cfg.name)
            raise
        log.write("end", status="finished", metrics=result.metrics, output=str(result.output_dir),
                  **({"ref": result.ref} if result.ref else {}))
        return result

    def _log(self, events: Path) -> RunLog | _NoLog:
        """The run log: the main process's alone (the others train, and it speaks for them)."""
        return RunLog(events, self.callback) if distributed.is_main() else _NoLog()

    def _summed(self, *values: float) -> list[float]:
        """Each value summed over the training processes."""
        if self.accelerator.num_processes == 1:
            return list(values)
        totals = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(totals, "sum").tolist()

    def _loop(self, log: RunLog, run_id: str) -> TrainResult | None:
        t = self.cfg.training
        stopping = t.early_stopping
        state = LoopState()
        if self.resume:
            saved = self.load_checkpoint()
            if saved:
                state = saved
        self._log_start(log, run_id, state)
        from adapters.training.progress import TrainProgress

        progress = TrainProgress(self.total_steps, enabled=self.show_progress and distributed.is_main(),
                                 start=state.step)
        train = self.tokenized["train"]
        columns = [c for c in train.column_names if c != "length"]
        self.model.train()
        stop = False
        tokens_since, time_since = 0, time.perf_counter()
        loss_sum, loss_count = 0.0, 0
        with progress:
            while not stop and state.step < self.total_steps:
                batches = self._batches(state.epoch)
                for b, idx in enumerate(batches):
                    if b < state.batch_in_epoch:
                        continue  # resuming mid-epoch: the order is seeded, so skip what was done
                    rows = train.select(idx).select_columns(columns)
                    batch = self.collator([rows[i] for i in range(len(rows))])
                    batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                    loss = self._step(batch)
                    tokens_since += int(batch["attention_mask"].sum())
                    loss_sum, loss_count = loss_sum + loss, loss_count + 1
                    state.batch_in_epoch = b + 1
                    if not self.accelerator.sync_gradients:
                        continue
                    state.step += 1
                    step = state.step
                    if step % t.log_every == 0 or step == self.total_steps:
                        elapsed = time.perf_counter() - time_since
                        tokens, loss_total, losses = self._summed(tokens_since, loss_sum, loss_count)
                        mean_loss = loss_total / max(losses, 1)
                        log.write("step", step=step, epoch=round(state.epoch + (b + 1) / len(batches), 3),
                                  loss=round(mean_loss, 5), lr=self.scheduler.get_last_lr()[0],
                                  tokens_per_s=round(tokens / max(elapsed, 1e-9), 1))
                        progress.update(step, loss=mean_loss, tokens_per_s=tokens / max(elapsed, 1e-9))
                        tokens_since, time_since, loss_sum, loss_count = 0, time.perf_counter(), 0.0, 0
                    else:
                        progress.update(step)
                    end_of_epoch = b + 1 == len(batches)
                    due = (t.eval_every == "epoch" and end_of_epoch) or \
                          (isinstance(t.eval_every, int) and step % t.eval_every == 0) or step == self.total_steps
                    if due:  # the main process evaluates; the others learn whether to stop
                        stop = self._after_eval(log, state, stopping, end_of_epoch) if distributed.is_main() else False
                        stop = distributed.from_main(stop)
                    if stop or step >= self.total_steps:
                        break
                else:
                    state.epoch += 1
                    state.batch_in_epoch = 0
        return self._finish(log, run_id, state)

    def _log_start(self, log: RunLog, run_id: str, state: LoopState) -> None:
        cfg, splits = self.cfg, self.splits
        log.write("start", run_id=run_id, name=cfg.name, total_steps=self.total_steps,
                  steps_per_epoch=self.steps_per_epoch, resumed_from=state.step if self.resume else None,
                  sizes=splits.sizes, class_balance=splits.class_balance, labels=splits.label_names,
                  config=cfg.model_dump(mode="json"), device=self.plan.device, pid=os.getpid(),
                  host=socket.gethostname())

    def _step(self, batch: dict) -> float:
        """One forward and backward; the optimizer steps when gradient accumulation says so.
        Returns the batch's loss."""
        model, max_norm = self.model, self.cfg.training.max_grad_norm
        with self.accelerator.accumulate(model):
            loss = step_loss(model, batch, self.distillation)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients and max_norm:
                self.accelerator.clip_grad_norm_(model.parameters(), max_norm)
            self.optimizer.step()
            if self.accelerator.sync_gradients:
                self.scheduler.step()
            self.optimizer.zero_grad()
        return loss.item()

    def _after_eval(self, log: RunLog, state: LoopState, stopping, end_of_epoch: bool) -> bool:
        """Evaluate on dev, keep the best adapter weights, checkpoint, and say whether to stop."""
        metrics = self._evaluate("dev")
        metric = stopping.metric if stopping else TASKS[self.cfg.task].default_metric
        mode = stopping.mode if stopping else METRIC_DIRECTIONS.get(metric, "max")
        value = metrics.get(metric)
        improved = state.best is None or (
            value is not None and (value > state.best if mode == "max" else value < state.best))
        if improved:
            state.best, state.best_step, state.bad_evals = value, state.step, 0
            state.best_state = _trainable_state(self.accelerator.unwrap_model(self.model))
        else:
            state.bad_evals += 1
        state.history.append({"step": state.step, metric: value})
        log.write("eval", split="dev", step=state.step, epoch=state.epoch + (1 if end_of_epoch else 0),
                  metrics=_headline(metrics), best=improved)
        # At an epoch's end a resumed run starts the next epoch.
        self.save_checkpoint(dataclasses.replace(state, epoch=state.epoch + 1, batch_in_epoch=0)
                             if end_of_epoch else state)
        log.write("checkpoint", step=state.step)
        return bool(stopping and state.bad_evals >= stopping.patience)

    def _finish(self, log: RunLog, run_id: str, state: LoopState) -> TrainResult | None:
        if not distributed.is_main():
            return None  # the main process's result reaches every process (run)
        unwrapped = self.accelerator.unwrap_model(self.model)
        if state.best_state is not None:
            _load_trainable_state(unwrapped, state.best_state)
        dev = self._evaluate("dev")
        test = self._evaluate("test") if len(self.tokenized["test"]) else {}
        log.write("eval", split="test", step=state.step, metrics=_headline(test))
        metrics = {"dev": dev, "test": test, "best_step": state.best_step, "steps": state.step,
                   "steps_per_epoch": self.steps_per_epoch}
        lineage = self.lineage(run_id, metrics)
        save_adapter(unwrapped, self.output_dir, lineage)
        return TrainResult(self.cfg.name, run_id, self.output_dir, self.run_dir, metrics, lineage=lineage)

    def lineage(self, run_id: str, metrics: dict) -> dict:
        cfg = self.cfg
        method_config = getattr(cfg, cfg.method).model_dump()
        base = {"id": self.base.id, "revision": self.base.revision, "fingerprint": self.fingerprint,
                "model_type": self.accelerator.unwrap_model(self.model).config.model_type}
        splits = self.splits
        extra = self.extra_lineage(metrics) if callable(self.extra_lineage) else dict(self.extra_lineage or {})
        return build_lineage(**extra,
            base=base, quant=cfg.quant, method=cfg.method, method_config=method_config, task=cfg.task,
            labels=splits.label_names, parent=self.parent,
            data={"source": splits.source, "fingerprint": splits.fingerprint, "columns": splits.columns,
                  "sizes": splits.sizes, "class_balance": splits.class_balance},
            training=cfg.model_dump(mode="json"), metrics=metrics, run_id=run_id, device=self.plan.device)


def check_parent_fits(parent: Path, cfg: TrainConfig, fingerprint: str | None,
                      label_names: list[str] | None, shown: str) -> None:
    """Refuse, before anything is loaded or written, an ``init_from`` adapter that this config
    cannot continue: another method, task, base, or (unless ``label_names`` is None) label set.
    peft and torch would each fail later with a different low-level error, or (labels in another
    order) not fail at all."""
    if not (parent / CONFIG_FILE).is_file():
        raise UsageError(f"init_from: {shown} is not an adapter directory",
                         f"pass a directory with {CONFIG_FILE}, or a store ref")
    meta = AdapterMeta.read(parent)
    problems, fixes = [], []
    if meta.method != cfg.method:
        problems.append(f"it is a {meta.method} adapter, the config asks for {cfg.method}")
        fixes.append(f"method: {meta.method}")
    if meta.task != cfg.task:
        problems.append(f"it is a {meta.task} adapter, the config's task is {cfg.task}")
        fixes.append(f"task: {meta.task}")
    if not meta.fits_weights(fingerprint):
        problems.append(f"it was trained on base {meta.base_text()}, the config's "
                        f"base '{cfg.base}' has other weights ({fingerprint[:19]}…)")
        fixes.append(f"base: {meta.base}")
    parent_labels = meta.labels
    labelled = not TASKS[cfg.task].generative
    if cfg.task == meta.task and labelled and parent_labels is not None and label_names is not None \
            and list(parent_labels) != list(label_names):
        def listed(names):
            return ", ".join(map(repr, names))
        if set(parent_labels) == set(label_names):
            problems.append(f"its labels are in another order ({listed(parent_labels)}) than this data's "
                            f"({listed(label_names)})")
        else:
            problems.append(f"it knows {len(parent_labels)} labels ({listed(parent_labels)}), this data has "
                            f"{len(label_names)} ({listed(label_names)})")
        fixes.append("data.labels: [" + ", ".join(parent_labels) + "] (rows of other labels are left out)")
    elif cfg.task == meta.task and labelled and parent_labels is None and meta.num_labels \
            and label_names is not None and meta.num_labels != len(label_names):
        problems.append(f"its head has {meta.num_labels} outputs, this data has {len(label_names)} labels")
        fixes.append(f"data.labels: the {meta.num_labels} labels it was trained on, in its output order")
    if problems:
        raise UsageError(f"init_from: {shown} cannot be trained further with this config: " + "; ".join(problems),
                         "match the parent (" + "; ".join(fixes) + "), or drop init_from to train a new adapter")


class _NoLog:
    """The run log of a process that is not the main one: writes nothing."""

    def write(self, event: str, **fields) -> None:
        pass


def _log_end(log: RunLog | _NoLog, exc: BaseException, **fields) -> None:
    # An exception may say how the run ended (a sweep's pruned trial: "pruned").
    status = getattr(exc, "run_status", None) or ("cancelled" if isinstance(exc, KeyboardInterrupt) else "failed")
    error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    log.write("end", status=status, error=error, **fields)


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
