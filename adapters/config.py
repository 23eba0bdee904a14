"""Training configs: YAML files validated by pydantic.

Unknown keys fail with a "did you mean", ``--set a.b=value`` overrides any field, and the fully
resolved config (every default filled in) is saved next to the trained adapter.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapters.errors import ConfigError
from adapters.tasks import METHODS, TASKS

# The registry's names, read once here: pydantic fixes a model's allowed values when the class is
# built, so a task or method registered after this import is not accepted.
TaskKind = Literal[tuple(TASKS)]
MethodKind = Literal[tuple(METHODS)]
QuantKind = Literal["4bit", "8bit", "none"]
ComputeDtypeKind = Literal["auto", "float32", "bfloat16", "float16"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # None: the per-architecture default (see adapters.training.methods); "all-linear": every linear layer.
    target_modules: list[str] | Literal["all-linear"] | None = None


class PrefixConfig(Strict):
    num_virtual_tokens: int = Field(20, ge=1)
    # Reparameterize the prefix through an MLP while training (Li & Liang); the stored adapter is
    # the same plain key/value tensor either way.
    projection: bool = False
    projection_hidden_size: int = Field(256, ge=1)


class SplitConfig(Strict):
    """How to cut train/dev/test when the data does not come split, and k-fold cross-validation.

    ``folds: K`` with ``fold: i`` (0 <= i < K): the test split is taken or cut as without folds,
    train and dev are pooled and split into K folds (stratified, see ``adapters.data.splits``);
    fold i is the dev split and the other folds train. ``fold: all`` trains on every fold (the
    final adapter of a cross-validation); its dev split is then those same rows. Each fold is a
    config of its own, so any one of them can be trained again alone."""

    dev: float = Field(0.1, gt=0.0, lt=1.0)
    test: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = 42
    folds: int | None = Field(None, ge=2)
    fold: int | Literal["all"] | None = None

    @model_validator(mode="after")
    def _fold_of_folds(self) -> SplitConfig:
        if (self.folds is None) != (self.fold is None):
            raise ValueError(
                "folds and fold go together: folds is the number of folds, fold the one that is "
                "the dev split (0 to folds - 1, or all), e.g. folds: 5 and fold: 0")
        if isinstance(self.fold, int) and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold {self.fold} is not one of the {self.folds} folds; "
                             f"use 0 to {self.folds - 1}, or all")
        return self

    @model_validator(mode="after")
    def _leaves_rows_to_train(self) -> SplitConfig:
        # Both are shares of all rows: at 1 or more nothing (or a rounding remainder) is left to
        # train on, yet a run would go ahead and store an adapter trained on a handful of rows.
        if self.dev + self.test >= 1.0:
            raise ValueError(
                f"dev ({self.dev:g}) and test ({self.test:g}) are shares of all rows and sum to "
                f"{self.dev + self.test:g}, leaving nothing to train on; keep their sum below 1, "
                "e.g. dev: 0.1 and test: 0.1")
        return self


class DataConfig(Strict):
    # A CSV/JSONL/Parquet file, a saved `datasets` directory, an HF dataset name, or a built-in
    # sample set ("builtin:rotten-tomatoes", "builtin:chatterbot").
    source: str
    subset: str | None = None
    # Column mapping: the names in *your* data for each role the task needs.
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    prompt_column: str = "prompt"
    response_column: str = "response"
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    # Restrict or order the label set; None discovers labels from the data (sorted).
    labels: list[str] | None = None
    split: SplitConfig = SplitConfig()
    max_length: int = Field(128, ge=8)
    oversample: bool = False
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)


class EarlyStoppingConfig(Strict):
    metric: str = "f1_macro"
    patience: int = Field(2, ge=1)
    mode: Literal["max", "min"] = "max"


def _named(value: Any) -> Any:
    """``optimizer: sgd`` is short for ``optimizer: {name: sgd}`` (likewise ``lr_scheduler``)."""
    return {"name": value} if isinstance(value, str) else value


class SchedulerConfig(Strict):
    """The learning rate after ``warmup_ratio`` of linear warm-up, per optimizer step: ``linear``
    to zero at the last step, ``cosine`` (``num_cycles`` half-waves: 0.5 goes down to zero once),
    ``constant``, ``step`` (times ``gamma`` every ``step_size`` steps) and ``exponential`` (times
    ``gamma`` per ``step_size`` steps, smoothly). ``step_size`` defaults to one epoch's steps."""

    name: Literal["linear", "cosine", "constant", "step", "exponential"] = "linear"
    num_cycles: float = Field(0.5, gt=0)
    step_size: int | None = Field(None, ge=1)
    gamma: float = Field(0.5, gt=0, le=1)


class OptimizerConfig(Strict):
    """``adamw`` (torch), ``sgd`` (with ``momentum``), ``adafactor`` (transformers, at the given
    learning rate) or ``paged_adamw_8bit`` (bitsandbytes, CUDA only)."""

    name: Literal["adamw", "sgd", "adafactor", "paged_adamw_8bit"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1)


class TrainingConfig(Strict):
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    lr_scheduler: SchedulerConfig = SchedulerConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    max_grad_norm: float | None = Field(1.0, gt=0)
    # "epoch", a number of optimizer steps between evaluations, or "end": once, after the last step.
    eval_every: Literal["epoch", "end"] | int = "epoch"
    early_stopping: EarlyStoppingConfig | None = None
    seed: int = 42
    gradient_checkpointing: bool = False
    # Batches of similar length: far less padding on real text.
    group_by_length: bool = True
    log_every: int = Field(10, ge=1)

    _named_scheduler = field_validator("lr_scheduler", "optimizer", mode="before")(_named)

    @field_validator("eval_every", mode="before")
    @classmethod
    def _eval_every(cls, value: Any) -> Any:
        # One message for the three spellings, not one per branch of the union.
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if value in ("epoch", "end") or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"eval_every is 'epoch', 'end' or a number of optimizer steps >= 1, got {value!r}")


class TrainConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    base: str
    task: TaskKind = "classification"
    method: MethodKind = "lora"
    quant: QuantKind = "4bit"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Compute dtype of the quantized layers; auto is the fastest measured for the device
    # (bf16 on GPUs and on CPUs with AVX512-BF16, else float32).
    compute_dtype: ComputeDtypeKind = "auto"
    lora: LoraConfig = LoraConfig()
    prefix: PrefixConfig = PrefixConfig()
    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    # A stored adapter (ref) or an adapter directory to continue training from.
    init_from: str | None = None

    @model_validator(mode="after")
    def _method_fits_options(self) -> TrainConfig:
        if self.training.gradient_checkpointing and not METHODS[self.method].gradient_checkpointing:
            others = " or ".join(m.name for m in METHODS.values() if m.gradient_checkpointing)
            raise ValueError(
                f"{self.method} does not work with gradient checkpointing "
                f"(set training.gradient_checkpointing: false, or use method: {others})"
            )
        return self


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _submodel(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """Walk a pydantic error location down to the model that holds its last key."""
    current: Any = model
    for key in loc[:-1]:
        if isinstance(key, int):
            continue
        field = current.model_fields.get(key) if isinstance(current, type) else None
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return None
    return current


def _explain(error: ValidationError, source: str) -> ConfigError:
    lines = []
    hint = None
    for e in error.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _submodel(TrainConfig, loc)
            names = _field_names(parent) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            msg = f"unknown key '{where}'"
            if close:
                msg += f" (did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?)"
            lines.append(msg)
            hint = hint or ("allowed keys here: " + ", ".join(names) if names else None)
        elif e["type"] == "missing":
            lines.append(f"missing required key '{where}'")
        elif e["type"] == "value_error":
            # A validator's own sentence; pydantic prefixes it with "Value error, ".
            lines.append(f"'{where}': {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"'{where}': {e['msg']}")
    return ConfigError(f"invalid config {source}: " + "; ".join(lines),
                       hint or "see configs/ for complete examples")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not KEY=VALUE", "example: --set training.epochs=2")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {item!r} has an empty key", "example: --set lora.r=16")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw config mapping."""
    for item in overrides:
        path, value = _parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section",
                                  "override a leaf key such as training.epochs")
            node = child
        node[path[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", "pass a YAML file, e.g. configs/rt-minilm-lora.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}",
                          "check indentation and quoting") from None
    if raw is None:
        raise ConfigError(f"{path} is empty", "see configs/ for complete examples")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys, not {type(raw).__name__}",
                          "see configs/ for complete examples")
    return raw


def validate(raw: dict, source: str = "") -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise _explain(exc, source or "(mapping)") from None


# The config keys that may name local files or folders.
PATH_KEYS = (("data", "source"), ("base",), ("init_from",))


def anchor_paths(data: dict, folder: Path, *, only_existing: bool = False) -> dict:
    """``data`` with each relative local path under PATH_KEYS made absolute against ``folder``,
    so a config means the same from any directory and its lineage reruns anywhere. Built-in
    names, hub ids and store refs stay as written: a value counts as a path when it exists under
    ``folder`` or (unless ``only_existing``) reads like one (``./x``, ``a/b/c``, ``x.csv``)."""
    from adapters.base.resolve import BUILTIN_BASES
    from adapters.pathlike import looks_like_local_source

    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for keys in PATH_KEYS:
        parent = out
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent.get(key), dict) else None
            if parent is None:
                break
        value = parent.get(keys[-1]) if parent is not None else None
        if not isinstance(value, str) or not value or value.startswith("builtin:"):
            continue
        if keys == ("base",) and value in BUILTIN_BASES:  # a built-in name wins over a folder of that name
            continue
        path = Path(value).expanduser()
        if path.is_absolute():
            continue
        candidate = folder / path
        reads_like_a_path = keys == ("data", "source") and looks_like_local_source(value)
        if candidate.exists() or (reads_like_a_path and not only_existing):
            parent[keys[-1]] = str(candidate.resolve())
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                raw: dict | None = None) -> TrainConfig:
    """Read a YAML config (or take a mapping), apply ``--set`` overrides and validate it.

    Relative paths in the file start from the file's folder; in ``--set`` overrides and in a
    mapping, from the current directory. Either way they are stored absolute."""
    if path is None:
        data = dict(raw or {})
    else:
        data = anchor_paths(read_yaml(path), Path(path).resolve().parent)
    data = anchor_paths(apply_overrides(data, overrides or []), Path.cwd(), only_existing=True)
    return validate(data, str(path) if path else "")


def to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
