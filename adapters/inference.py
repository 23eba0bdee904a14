"""Load a trained adapter onto its base and predict: the engine behind ``adapters.load``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.artifact import AdapterMeta
from adapters.artifact import check_base as check_adapter_base
from adapters.base.device import plan_device
from adapters.base.loading import load_base_model, load_tokenizer
from adapters.base.resolve import resolve_base, weights_fingerprint
from adapters.errors import BaseMismatchError, UsageError
from adapters.tasks import TASKS


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
        from adapters.base.loading import format_prompt

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
        task = TASKS[self.task]
        if task.generative:
            return self.generate(inputs, **kwargs)
        if task.labels == "row":
            return self.classify(inputs, **kwargs)
        sentences = [s.split() if isinstance(s, str) else s for s in ([inputs] if isinstance(inputs, str) else inputs)]
        return self.tag(sentences)


def load(base: str | None, adapter: str | Path, quant: str | None = None, device: str = "auto",
         check_base: bool = True, compute_dtype: str = "auto") -> Loaded:
    """Load ``adapter`` (a directory) onto ``base`` (None: the base it was trained on);
    ``compute_dtype`` of the quantized layers: "auto" (per device) or float32 / bfloat16 / float16."""
    adapter_dir = Path(adapter)
    meta = AdapterMeta.read(adapter_dir)
    base_name = base or meta.base
    if not base_name:
        raise UsageError(f"{adapter_dir} does not record its base model", "pass the base explicitly")
    resolved = resolve_base(base_name)
    if check_base:
        check_adapter_base(meta, weights_fingerprint(resolved.path), base_name,
                           hint=f"load it on its own base: adapters.load('{meta.base}', ...)")
    plan = plan_device(device, compute_dtype)
    tokenizer = load_tokenizer(resolved, meta.task)
    # Without label names the head is built with as many outputs as the saved one has.
    label_names = meta.labels or ([f"LABEL_{i}" for i in range(meta.num_labels)] if meta.num_labels else None)
    model, _ = load_base_model(resolved, meta.task, quant or meta.quant or "none", plan, label_names,
                               pad_token_id=tokenizer.pad_token_id)
    peft_model = attach_adapter(model, adapter_dir, base_name)
    peft_model.eval()
    return Loaded(peft_model, tokenizer, meta.task, meta.labels, adapter_dir)


def attach_adapter(model, adapter_dir: Path, base_name: str, is_trainable: bool = False):
    """``PeftModel.from_pretrained`` with its failures on a base the adapter was not made for (other
    sizes, other module names: peft and torch raise RuntimeError / ValueError / KeyError, each
    worded differently) turned into one BaseMismatchError."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        detail = _first_mismatch(str(exc))
        recorded = AdapterMeta.read(adapter_dir).base
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
