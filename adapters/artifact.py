"""The adapter directory: one typed view of it, and the one writer of what this project adds to it.

An adapter directory is a plain PEFT directory (``adapter_config.json``, ``adapter_model.safetensors``)
plus, when this project wrote it, ``adapter_manager.json`` (the lineage: base and its weights'
fingerprint, quantization, method, task and labels, data, training config, metrics, parent, run)
and ``label_map.json``. Training, merging, loading, the runtime, the server and the store all pass
such directories around; this module is where they are read (``AdapterMeta.read``), written
(``save_adapter``, ``write_metadata``), split into their tensors (``split_tensors``) and checked
against a base (``check_base``), in the manner of vLLM's ``PEFTHelper``.

The lineage in ``adapter_manager.json`` is the one copy written: ``Store.put`` derives a version's
recorded lineage, metrics, parent and run id from it, so the store and the file cannot disagree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.errors import BaseMismatchError, UsageError
from adapters.tasks import TASKS, method_for_peft_type, task_for_peft_type
from adapters_store.files import CONFIG_FILE, LABEL_MAP_FILE, METADATA_FILE, WEIGHTS_FILE

PICKLE_FILE = "adapter_model.bin"
TRAINING_CONFIG_FILE = "training_config.yaml"  # the resolved config, for retraining
# The output layer of a task head, whose rows are the labels (BERT / Llama / RoBERTa naming).
HEAD_OUTPUTS = ("classifier.weight", "score.weight", "classifier.out_proj.weight")

__all__ = ["AdapterMeta", "BaseMismatchError", "CONFIG_FILE", "METADATA_FILE", "PickledAdapterError",
           "WEIGHTS_FILE", "adapter_dir", "build_lineage", "check_base", "check_weights", "content_name",
           "load_tensors", "lora_only_config", "save_adapter", "split_tensors", "store_ref", "write_metadata"]


class PickledAdapterError(UsageError):
    """An adapter whose weights exist only as a pickle, which is never loaded."""


@dataclass(frozen=True)
class AdapterMeta:
    """What an adapter directory says about itself: our lineage where present, else what peft
    recorded in adapter_config.json (a directory made elsewhere)."""

    path: Path
    task: str
    method: str  # lora | prefix, or peft's type lower-cased for others (ia3, ...)
    labels: list[str] | None
    num_labels: int | None  # from the labels, else the saved head's rows; None for causal LMs
    base: str | None  # the base's id or path as recorded
    quant: str | None
    fingerprint: str | None  # of the base's weights, when recorded (``weights_fingerprint``)
    peft: dict = field(repr=False)  # adapter_config.json as written
    lineage: dict = field(repr=False)  # adapter_manager.json; {} for a plain PEFT directory

    @classmethod
    def read(cls, adapter_dir: str | os.PathLike) -> AdapterMeta:
        """Refuses a directory that is not an adapter, or has no loadable (safetensors) weights,
        before anything is loaded."""
        path = Path(adapter_dir)
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise UsageError(f"{path} is not an adapter directory (no {CONFIG_FILE})",
                             "pass a directory written by `adapters train --output`, a PEFT directory, "
                             "or a store ref")
        peft = _read_json(config_path)
        check_weights(path)
        lineage = _read_json(path / METADATA_FILE) if (path / METADATA_FILE).is_file() else {}
        recorded_task = lineage.get("task") or {}
        labels = recorded_task.get("labels")
        if labels is None and (path / LABEL_MAP_FILE).is_file():
            id2label = _read_json(path / LABEL_MAP_FILE).get("id2label") or {}
            labels = [id2label[str(i)] for i in range(len(id2label))]
        task = recorded_task.get("kind") or task_for_peft_type(peft.get("task_type")) or "causal-lm"
        generative = task in TASKS and TASKS[task].generative
        num_labels = len(labels) if labels else (None if generative else head_label_count(path))
        base = lineage.get("base") or {}
        return cls(path=path, task=task, method=method_for_peft_type(peft.get("peft_type")), labels=labels,
                   num_labels=num_labels, base=base.get("id") or peft.get("base_model_name_or_path"),
                   quant=lineage.get("quant"), fingerprint=base.get("fingerprint"), peft=peft, lineage=lineage)

    def fits_weights(self, fingerprint: str | None) -> bool:
        """False only when both fingerprints are known and differ: a plain PEFT directory (none
        recorded) or a base not fingerprinted yet checks nothing here; peft's own shape checks
        still apply when the weights load."""
        return not (self.fingerprint and fingerprint) or self.fingerprint == fingerprint

    def base_text(self) -> str:
        """The base as messages name it: 'id' (sha256:0123456789ab…)."""
        return f"'{self.base}'" + (f" ({self.fingerprint[:19]}…)" if self.fingerprint else "")


def check_base(meta: AdapterMeta, fingerprint: str | None, base_name: str, *, shown: str | None = None,
               hint: str | None = None) -> None:
    """Refuse ``meta``'s adapter on a base whose weights have ``fingerprint`` when it records
    other ones (see ``AdapterMeta.fits_weights``)."""
    if meta.fits_weights(fingerprint):
        return
    raise BaseMismatchError(
        f"adapter {shown or meta.path} was trained on base {meta.base_text()}, "
        f"but '{base_name}' has other weights ({fingerprint[:19]}…)",
        hint or f"load it on its own base ('{meta.base}')")


def check_weights(adapter_dir: Path) -> Path:
    """The adapter's safetensors weights file. Pickled weights (``adapter_model.bin``) are
    refused: unpickling can run code from the file, and even torch's restricted loader is one
    bug away from doing so. Converting is the owner's one-off step, somewhere they trust."""
    adapter_dir = Path(adapter_dir)
    weights = adapter_dir / WEIGHTS_FILE
    if weights.is_file():
        return weights
    if (adapter_dir / PICKLE_FILE).is_file():
        raise PickledAdapterError(
            f"adapter {adapter_dir} has its weights only as a pickle ({PICKLE_FILE}); a pickle can run "
            "arbitrary code when loaded, so it is not loaded",
            "convert it once, where you trust the file: load the adapter with peft there and save it with "
            f"model.save_pretrained(dir, safe_serialization=True), which writes {WEIGHTS_FILE}; or "
            "`adapters import DIR --name NAME --allow-pickle` converts plain tensors into the store")
    raise UsageError(f"adapter {adapter_dir} has no {WEIGHTS_FILE}",
                     "pass a complete adapter directory (peft's save_pretrained writes it)")


def head_label_count(adapter_dir: Path) -> int | None:
    """How many labels an adapter's saved head predicts, from the safetensors header alone (for
    a PEFT directory that records no label names); None when it saved no recognisable head."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(adapter_dir) / WEIGHTS_FILE), "pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                plain = key.replace(".modules_to_save.default.", ".").replace(".modules_to_save.", ".")
                if any(plain == head or plain.endswith("." + head) for head in HEAD_OUTPUTS):
                    return int(weights.get_slice(key).get_shape()[0])
    except Exception:  # noqa: BLE001 - a damaged file is reported when the weights are loaded
        return None
    return None


# ------------------------------------------------------------------ tensors


def load_tensors(path: Path) -> dict:
    """Every tensor of the adapter's safetensors file (a pickle-only folder is refused)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = check_weights(path)
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"cannot read {weights}: {exc}",
                         "the file is damaged: re-save the adapter, or take it from the store again") from None


@dataclass
class AdapterTensors:
    """An adapter's saved tensors by where they go: LoRA matrices into a peft model, the prefix's
    virtual keys/values, and whole modules saved beside them (``modules_to_save``: a task head,
    BERT's pooler), keyed as saved."""

    lora: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)
    prefix: Any = None  # prompt_embeddings: [num_virtual_tokens, layers * 2 * kv_heads * head_dim]


def split_tensors(tensors: dict) -> AdapterTensors:
    out = AdapterTensors()
    for key, tensor in tensors.items():
        if key == "prompt_embeddings":
            out.prefix = tensor
        elif ".lora_" in key:
            out.lora[key] = tensor
        else:
            out.modules[key] = tensor
    return out


def content_name(path: Path) -> str:
    """``a_`` + 16 hex of the config, weights and lineage: equal content shares one resident copy,
    and the name can never be a substring of a peft prefix such as ``lora_`` (a peft warning trap)."""
    import hashlib

    digest = hashlib.sha256()
    for fname in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE):
        f = Path(path) / fname
        if f.is_file():
            digest.update(fname.encode())
            digest.update(f.read_bytes())
    return "a_" + digest.hexdigest()[:16]


def lora_only_config(peft_config: dict):
    """A ``LoraConfig`` for an adapter's LoRA matrices alone: no heads (``modules_to_save``), no
    task type, inference mode. peft never puts LoRA on a module it saves whole, so with the heads
    dropped those modules are excluded explicitly: a target such as ``dense`` would otherwise also
    reach BERT's ``pooler.dense`` (part of the head) and expect LoRA weights the adapter never had."""
    from peft import LoraConfig

    fields = {k: v for k, v in peft_config.items() if k in LoraConfig.__dataclass_fields__}
    heads = fields.get("modules_to_save") or []
    fields.update(modules_to_save=None, task_type=None, inference_mode=True)
    if heads:
        # The pattern peft itself uses for modules_to_save (any module path at or under a head).
        patterns = [rf"(^|.*\.)({'|'.join(re.escape(h) for h in heads)})($|\..*)"]
        own = fields.get("exclude_modules")
        if isinstance(own, str):
            patterns.append(own)
        elif own:  # a list: exact names or name suffixes, as peft matches them
            patterns.append(rf"(^|.*\.)({'|'.join(re.escape(m) for m in own)})")
        fields["exclude_modules"] = "|".join(f"(?:{p})" for p in patterns)
    return LoraConfig(**fields)


# ------------------------------------------------------------------ lineage and writing


def build_lineage(*, base: dict, quant: str | None, method: str, method_config: dict, task: str,
                  labels: list[str] | None, parent: str | None, **extra) -> dict:
    """The lineage of a new adapter, as trainer and merge record it. ``base``: id, fingerprint
    (and revision, model_type where known); ``parent``: the store ref (or, outside the store, the
    absolute path) it continues from; ``extra``: what the producer adds (data, training, metrics,
    run_id, device for a trained adapter; merge for a merged one)."""
    return {"base": base, "quant": quant, "method": {"kind": method, "config": method_config},
            "task": {"kind": task, "labels": labels}, **extra, "parent": parent,
            "libraries": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "adapter-manager"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def write_metadata(directory: Path, lineage: dict) -> None:
    """Write our files beside peft's: the lineage, the label map, and (for a trained adapter)
    the resolved training config."""
    directory = Path(directory)
    (directory / METADATA_FILE).write_text(json.dumps(lineage, indent=2, default=str))
    labels = lineage["task"]["labels"]
    if labels:
        (directory / LABEL_MAP_FILE).write_text(json.dumps(
            {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}, indent=2))
    if lineage.get("training"):
        from adapters.config import TrainConfig, to_yaml

        (directory / TRAINING_CONFIG_FILE).write_text(to_yaml(TrainConfig.model_validate(lineage["training"])))


def save_adapter(model, output_dir: Path, lineage: dict) -> None:
    """A plain PEFT directory (adapter_config.json, adapter_model.safetensors with the task head)
    plus our metadata, written to a staging dir and renamed so no half-written adapter is seen."""
    output_dir = Path(output_dir)  # checked by the trainer before training (check_output_dir)
    staging = output_dir.parent / f".{output_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        write_metadata(staging, lineage)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_output_dir(output_dir: Path) -> None:
    """An output directory is new, empty, or an adapter directory (which is replaced)."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or (any(output_dir.iterdir())
                                                            and not (output_dir / CONFIG_FILE).is_file())):
        raise UsageError(f"output directory {output_dir} exists and is not an adapter directory",
                         "choose an empty or new --output directory")


# ------------------------------------------------------------------ refs


def adapter_dir(adapter: str | os.PathLike, store_root: str | os.PathLike | None = None) -> Path:
    """The directory of an adapter given as a path or a store ref; stored files are re-hashed
    first, so a corrupted adapter is refused naming the file."""
    path = Path(adapter).expanduser()
    if path.is_dir():
        return path
    from adapters_store import Store

    with Store(store_root, create=False) as s:  # reading: a mistyped store is not made here
        return s.check(str(adapter)).path


def store_ref(adapter: str | os.PathLike, store_root: str | os.PathLike | None) -> str | None:
    """The canonical ``name@n`` of a store ref; None for a directory."""
    if Path(adapter).expanduser().is_dir():
        return None
    from adapters_store import Store

    with Store(store_root, create=False) as s:
        return s.resolve(str(adapter)).ref


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", "re-save the adapter (peft's save_pretrained)") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} is not a JSON object", "re-save the adapter (peft's save_pretrained)")
    return value
