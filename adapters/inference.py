"""Load a trained adapter onto its base and predict: the engine behind ``adapters.load``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.base.device import plan_device
from adapters.base.loading import load_base_model, load_tokenizer
from adapters.base.resolve import resolve_base, weights_fingerprint
from adapters.errors import UsageError

TASK_FROM_PEFT = {"SEQ_CLS": "classification", "CAUSAL_LM": "causal-lm", "TOKEN_CLS": "token-classification"}


WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"


class BaseMismatchError(UsageError):
    """The adapter was trained on other base weights than the ones being loaded."""


class PickledAdapterError(UsageError):
    """An adapter whose weights exist only as a pickle, which is never loaded."""


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


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", "re-save the adapter (peft's save_pretrained)") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} is not a JSON object", "re-save the adapter (peft's save_pretrained)")
    return value


# The output layer of a task head, whose rows are the labels (BERT / Llama / RoBERTa naming).
HEAD_OUTPUTS = ("classifier.weight", "score.weight", "classifier.out_proj.weight")


def head_label_count(adapter_dir: Path) -> int | None:
    """How many labels an adapter's saved head predicts, from the safetensors header alone (for
    a PEFT directory that records no label names); None when it saved no recognisable head."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(adapter_dir) / WEIGHTS_FILE), "pt") as weights:
            for key in weights.keys():
                plain = key.replace(".modules_to_save.default.", ".").replace(".modules_to_save.", ".")
                if any(plain == head or plain.endswith("." + head) for head in HEAD_OUTPUTS):
                    return int(weights.get_slice(key).get_shape()[0])
    except Exception:  # noqa: BLE001 - a damaged file is reported when the weights are loaded
        return None
    return None


def read_adapter_metadata(adapter_dir: Path) -> dict:
    """What we know of an adapter directory: our lineage when present, else what peft recorded.
    Refuses a directory without loadable weights (see check_weights) before anything is loaded."""
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise UsageError(f"{adapter_dir} is not an adapter directory (no adapter_config.json)",
                         "pass a directory written by `adapters train --output`, a PEFT directory, or a store ref")
    peft_config = _read_json(config_path)
    check_weights(adapter_dir)
    meta_path = adapter_dir / "adapter_manager.json"
    lineage = _read_json(meta_path) if meta_path.is_file() else {}
    labels = (lineage.get("task") or {}).get("labels")
    label_map = adapter_dir / "label_map.json"
    if labels is None and label_map.is_file():
        id2label = _read_json(label_map).get("id2label") or {}
        labels = [id2label[str(i)] for i in range(len(id2label))]
    task = (lineage.get("task") or {}).get("kind") or TASK_FROM_PEFT.get(peft_config.get("task_type"), "causal-lm")
    base = (lineage.get("base") or {}).get("id") or peft_config.get("base_model_name_or_path")
    num_labels = len(labels) if labels else (head_label_count(adapter_dir) if task != "causal-lm" else None)
    return {"task": task, "labels": labels, "num_labels": num_labels, "base": base, "quant": lineage.get("quant"),
            "fingerprint": (lineage.get("base") or {}).get("fingerprint"), "peft": peft_config, "lineage": lineage}


@dataclass
class Loaded:
    """A base with one adapter, ready to predict. ``model`` is a plain ``peft.PeftModel``."""

    model: object
    tokenizer: object
    task: str
    labels: list[str] | None
    adapter_dir: Path

    def __iter__(self):  # model, tokenizer = adapters.load(...)
        return iter((self.model, self.tokenizer))

    @torch.no_grad()
    def classify(self, texts: list[str] | str, text_pairs: list[str] | None = None) -> list[dict]:
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        batch = self.tokenizer(texts, text_pairs, truncation=True, padding=True, return_tensors="pt")
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        probs = torch.softmax(self.model(**batch).logits.float(), dim=-1)
        out = [{"label": self.labels[int(p.argmax())] if self.labels else int(p.argmax()),
                "probabilities": {(self.labels[i] if self.labels else str(i)): round(float(v), 6)
                                  for i, v in enumerate(p)}} for p in probs]
        return out

    @torch.no_grad()
    def generate(self, prompts: list[str] | str, max_new_tokens: int = 64, **kwargs) -> list[str]:
        from adapters.data.batching import format_prompt

        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        self.tokenizer.padding_side = "left"
        texts = [format_prompt(self.tokenizer, p) for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        kwargs.setdefault("do_sample", False)
        out = self.model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                  **kwargs)
        return [self.tokenizer.decode(row[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
                for row in out]

    @torch.no_grad()
    def tag(self, sentences: list[list[str]]) -> list[list[tuple[str, str]]]:
        batch = self.tokenizer(sentences, is_split_into_words=True, truncation=True, padding=True, return_tensors="pt")
        logits = self.model(**{k: v.to(self.model.device) for k, v in batch.items()}).logits
        result = []
        for row, words in enumerate(sentences):
            seen, tags = set(), []
            for pos, word_id in enumerate(batch.word_ids(row)):
                if word_id is None or word_id in seen:
                    continue
                seen.add(word_id)
                tags.append((words[word_id], self.labels[int(logits[row, pos].argmax())]))
            result.append(tags)
        return result

    def predict(self, inputs, **kwargs):
        """classify, generate or tag, whichever the adapter's task is."""
        if self.task == "classification":
            return self.classify(inputs, **kwargs)
        if self.task == "causal-lm":
            return self.generate(inputs, **kwargs)
        sentences = [s.split() if isinstance(s, str) else s for s in ([inputs] if isinstance(inputs, str) else inputs)]
        return self.tag(sentences)


def load(base: str | None, adapter: str | Path, quant: str | None = None, device: str = "auto",
         check_base: bool = True, compute_dtype: str = "auto") -> Loaded:
    """Load ``adapter`` (a directory) onto ``base`` (None: the base it was trained on);
    ``compute_dtype`` of the quantized layers: "auto" (per device) or float32 / bfloat16 / float16."""
    adapter_dir = Path(adapter)
    meta = read_adapter_metadata(adapter_dir)
    base_name = base or meta["base"]
    if not base_name:
        raise UsageError(f"{adapter_dir} does not record its base model", "pass the base explicitly")
    resolved = resolve_base(base_name)
    if check_base and meta["fingerprint"]:
        actual = weights_fingerprint(resolved.path)
        if actual and actual != meta["fingerprint"]:
            raise BaseMismatchError(
                f"adapter {adapter_dir} was trained on base '{meta['base']}' ({meta['fingerprint'][:19]}…), "
                f"but '{base_name}' has other weights ({actual[:19]}…)",
                f"load it on its own base: adapters.load('{meta['base']}', ...)")
    plan = plan_device(device, compute_dtype)
    tokenizer = load_tokenizer(resolved, meta["task"])
    # Without label names the head is built with as many outputs as the saved one has.
    label_names = meta["labels"] or ([f"LABEL_{i}" for i in range(meta["num_labels"])] if meta["num_labels"] else None)
    model, _ = load_base_model(resolved, meta["task"], quant or meta["quant"] or "none", plan, label_names,
                               pad_token_id=tokenizer.pad_token_id)
    peft_model = attach_adapter(model, adapter_dir, base_name)
    peft_model.eval()
    return Loaded(peft_model, tokenizer, meta["task"], meta["labels"], adapter_dir)


def attach_adapter(model, adapter_dir: Path, base_name: str, is_trainable: bool = False):
    """``PeftModel.from_pretrained`` with its failures on a base the adapter was not made for (other
    sizes, other module names: peft and torch raise RuntimeError / ValueError / KeyError, each
    worded differently) turned into one BaseMismatchError."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        detail = _first_mismatch(str(exc))
        recorded = read_adapter_metadata(adapter_dir)["base"]
        raise BaseMismatchError(
            f"adapter {adapter_dir} does not fit base '{base_name}': {detail}",
            (f"load it on the base it was trained for ('{recorded}')" if recorded and recorded != base_name
             else "load it on the base it was trained for")
            + ": --base on the command line, the first argument of adapters.load()") from None


def _first_mismatch(text: str) -> str:
    """The telling line of a state-dict error: torch lists every mismatched tensor, then adds
    advice about strict loading that does not apply here."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("size mismatch"):
            return line.rstrip(".") + "; it was made for a model of another size"
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    return first if len(first) <= 300 else first[:297] + "..."
