"""The training config behind the Train form: which configs exist, the keys the form edits, and
the ``--set`` overrides that turn a config plus the form into the run the user asked for.

The form starts from the *resolved* config (every default filled in by adapters.config), so an
override is emitted only for a field the user changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.artifact import TRAINING_CONFIG_FILE  # a stored version's resolved training config
from adapters.tasks import METHODS, TASKS  # torch-free: the form's choices, read at startup

QUANTS = ("4bit", "8bit", "none")


@dataclass(frozen=True)
class FieldSpec:
    key: str  # dotted config key
    label: str
    kind: str  # "text" | "int" | "float" | "optional-int" | "choice"
    options: tuple[str, ...] = ()


FIELDS = (
    FieldSpec("name", "name", "text"),
    FieldSpec("base", "base", "text"),
    FieldSpec("task", "task", "choice", tuple(TASKS)),
    FieldSpec("data.source", "dataset", "text"),
    # The two data columns each task reads (once, where tasks share one).
    *{key: FieldSpec(key, label, "text") for task in TASKS.values() for key, label in task.form_columns}.values(),
    FieldSpec("method", "method", "choice", tuple(METHODS)),
    FieldSpec("lora.r", "LoRA r", "int"),
    FieldSpec("lora.alpha", "LoRA alpha", "int"),
    FieldSpec("prefix.num_virtual_tokens", "virtual tokens", "int"),
    FieldSpec("training.learning_rate", "learning rate", "float"),
    FieldSpec("training.epochs", "epochs", "float"),
    FieldSpec("training.max_steps", "max steps", "optional-int"),
    FieldSpec("quant", "quantization", "choice", QUANTS),
)
FIELD_BY_KEY = {f.key: f for f in FIELDS}


def visible_keys(task: str, method: str) -> set[str]:
    """The form keys that matter for a task and method (the others are hidden)."""
    columns = {key for t in TASKS.values() for key, _ in t.form_columns}
    hidden = columns - {key for key, _ in (TASKS[task].form_columns if task in TASKS else ())}
    hidden |= {f.key for f in FIELDS for m in METHODS.values()
               if m.name != method and f.key.startswith(f"{m.config_section}.")}
    return {f.key for f in FIELDS} - hidden


@dataclass(frozen=True)
class ConfigEntry:
    """A config offered in the picker: a file in the configs directory, or the training config a
    stored version keeps (``ref``), which works wherever the TUI is started."""

    path: Path
    name: str
    task: str
    method: str
    ref: str | None = None

    @property
    def key(self) -> str:
        return f"stored:{self.ref}" if self.ref else str(self.path)

    @property
    def label(self) -> str:
        return f"{self.ref or self.path.name}  ({self.task}, {self.method})"


def stored_configs(versions) -> list[ConfigEntry]:
    """The training config of each adapter's newest version that has one (imported and merged
    versions have none), by adapter name."""
    newest: dict[str, ConfigEntry] = {}
    for v in sorted(versions, key=lambda v: (v.name, v.number)):
        path = Path(v.path) / TRAINING_CONFIG_FILE
        if TRAINING_CONFIG_FILE in v.files and path.is_file():
            newest[v.name] = ConfigEntry(path, v.name, v.task or "classification", v.method or "lora", v.ref)
    return [newest[name] for name in sorted(newest)]


def list_configs(configs_dir: Path | None) -> list[ConfigEntry]:
    """Training configs in a directory: YAML files that have a ``data`` section (serve configs and
    other YAML are left out)."""
    import yaml

    if configs_dir is None or not Path(configs_dir).is_dir():
        return []
    found = []
    for path in sorted(Path(configs_dir).glob("*.y*ml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict) and raw.get("base"):
            found.append(ConfigEntry(path, str(raw.get("name") or path.stem), str(raw.get("task") or "classification"),
                                     str(raw.get("method") or "lora")))
    return found


def resolve(path: Path, overrides: list[str] | None = None) -> dict:
    """The fully resolved config as a plain mapping; raises adapters' ConfigError (message and
    hint) for a config that does not validate. Imports pydantic: call it from a worker."""
    from adapters.config import load_config

    return load_config(path, overrides or []).model_dump(mode="json")


def get(config: dict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def to_text(value: Any) -> str:
    """A config value as the form shows it."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value)) if value >= 1 else repr(value)
    return str(value)


def parse(spec: FieldSpec, text: str) -> Any:
    """A form entry as a config value; ValueError names the field when it is not one."""
    text = text.strip()
    if spec.kind in ("text", "choice"):
        return text
    if spec.kind == "optional-int" and text == "":
        return None
    try:
        return int(text) if spec.kind in ("int", "optional-int") else float(text)
    except ValueError:
        kind = "a whole number" if spec.kind != "float" else "a number"
        raise ValueError(f"{spec.label} must be {kind}, not {text!r}") from None


def _yaml_value(value: Any) -> str:
    # JSON is YAML: strings stay strings ("yes" or "1e-3" are not turned into a bool or a float).
    return json.dumps(value)


def overrides(resolved: dict, values: dict[str, Any]) -> list[str]:
    """``KEY=VALUE`` for each form value that differs from the resolved config."""
    out = []
    for key, value in values.items():
        current = get(resolved, key)
        same = current == value or (isinstance(current, (int, float)) and isinstance(value, (int, float))
                                    and float(current) == float(value))
        if not same:
            out.append(f"{key}={_yaml_value(value)}")
    return out
