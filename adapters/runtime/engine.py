"""The hot-swap engine: one resident (quantized) base, many adapters, mixed batches.

LoRA adapters live in a slot bank with forward hooks on the targeted linear layers, picked per row
(see ``lora.py``). Prefix adapters are plain virtual key/values fed through the cache per row
(see ``prefix.py``; peft itself refuses LoRA and prefix adapters on one model); those rows take
LoRA slot 0, which is zeros.
Classifier heads are per adapter over the shared body (see ``heads.py``). So one batch can hold
rows for LoRA A, LoRA B, prefix P, prefix Q and the bare base, in one forward pass per step.

Thread safety: one re-entrant lock around every model call and every change to the resident set;
a decode step holds it for one forward pass, so concurrent batches and streams interleave by step.
Adapters used by a running call are pinned, so eviction or unload never pulls them mid-call.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapters.errors import UsageError
from adapters.runtime.cache import BASE, FAILED, LOADING, LRU, READY, AdapterInfo, Bounded, CacheFullError, Entry
from adapters.runtime.generate import Decoder, GenerationResult, Prefill, TextStream
from adapters.runtime.lora import LoraBank
from adapters.runtime.requests import GenerationRequest, requests_for
from adapters.runtime.resolvers import (  # noqa: F401  (directory_resolver: for callers of this module)
    Resolver,
    UnknownAdapterError,
    directory_resolver,
    store_resolver,
)
from adapters.tasks import TASKS

MAX_FAILED = 64  # failed loads remembered (newest kept): their errors show in adapters()


def _contiguous_input(module, args):
    """LM-head pre-hook: hand the head a contiguous input. A decoder's forward with
    ``logits_to_keep=1`` gives it ``hidden[:, -1:, :]``, which is not contiguous when a batch of
    more than one row has more than one position (every prefill). On the CPU, ``F.linear`` on a
    non-contiguous 3-D bf16 input takes torch's expand + ``bmm`` path and first copies the weight
    once per row: for SmolLM2's 49,152 x 576 head and 8 rows, 3.3 s against 24 ms for the same
    product on a contiguous input (torch 2.13, one thread), more than a whole 8-token decode of
    the batch. Same values either way: only the memory layout of one [rows, 1, hidden] slice."""
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


@dataclass
class Resident:
    """What the engine keeps of one resident adapter, besides its LoRA slots in the bank."""

    task: str
    method: str  # "lora" | "prefix"
    prefix: list | None = None  # per layer (key, value) on the engine's device and dtype
    head: Any = None  # a runtime.heads.Head for a classifier; None for a causal LM


class Engine:
    """One resident base serving many adapters; ``generate``/``classify`` take one adapter per row.

    ``resolver`` maps a ref to an adapter directory (default: a ref in the store at
    ``$ADAPTERS_HOME``, or a directory path; ``store_resolver(root, allow_paths=True)`` for
    another store) and raises
    ``LookupError``/``FileNotFoundError`` (or ``UnknownAdapterError``) for unknown refs. ``preload``
    refs are loaded before the constructor returns (errors raise). Adapters not resident are loaded
    on first use; a ref is resolved once while resident (unload it to pick up a moved alias).
    """

    def __init__(self, base: str, quant: str = "4bit", device: str = "auto", max_adapters: int = 64,
                 max_bytes: int = 2**30, resolver: Resolver | None = None,
                 preload: list[str] | None = None, pin_wait_s: float = 30.0, compute_dtype: str = "auto"):
        from adapters.base.device import plan_device
        from adapters.base.loading import ENCODER_ONLY, load_base_model, load_model_config, load_tokenizer
        from adapters.base.resolve import resolve_base, weights_fingerprint

        self.base = resolve_base(base)
        self.quant = quant
        self.plan = plan_device(device, compute_dtype)
        self.fingerprint = weights_fingerprint(self.base.path)
        config = load_model_config(self.base)
        # Decoders keep their LM head (generation) and get classifier heads per adapter; encoders
        # are loaded as their sequence classifier so the body's module paths match the adapters'.
        self.is_decoder = config.model_type not in ENCODER_ONLY
        task = "causal-lm" if self.is_decoder else "classification"
        self.tokenizer = load_tokenizer(self.base, task)
        self.model, _ = load_base_model(self.base, task, quant, self.plan, config=config,
                                        pad_token_id=self.tokenizer.pad_token_id)
        self.model.eval()
        self.config = self.model.config
        self.body = getattr(self.model, self.model.base_model_prefix)
        self.dtype = self.model.get_input_embeddings().weight.dtype
        if not self.dtype.is_floating_point:
            self.dtype = self.plan.compute_dtype
        self.device = self.model.get_input_embeddings().weight.device
        self.lora = LoraBank(self.model, self.device, self.dtype)
        head = self.model.get_output_embeddings() if self.is_decoder else None
        if head is not None:
            head.register_forward_pre_hook(_contiguous_input)
        self._head_templates: dict[int, torch.nn.Module] = {}  # label count -> meta head (heads.py)
        self._resolve = resolver or store_resolver(allow_paths=True)
        self._lock = threading.RLock()
        # Signalled when a call releases its adapters: a load that found every slot pinned waits
        # (up to pin_wait_s) for one to free up instead of failing a burst of distinct adapters.
        self._unpinned = threading.Condition(self._lock)
        self.pin_wait_s = pin_wait_s
        self._cache = LRU(max_adapters, max_bytes)
        self._refs: dict[str, str] = {}  # ref -> internal name
        self._pending: dict[str, tuple[AdapterInfo, threading.Event]] = {}  # ref -> LOADING
        # ref -> FAILED (until retried or unloaded); bounded: a caller may try endless bad refs.
        self._failed: Bounded[str, AdapterInfo] = Bounded(MAX_FAILED)
        gen_config = getattr(self.model, "generation_config", None)
        eos = getattr(gen_config, "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, self.tokenizer.eos_token_id] if i is not None}
        self.decoder = Decoder(self.model, self.tokenizer, self.eos_ids, self._lock)
        for ref in preload or []:
            self.load(ref)

    # ---- the resident set ----------------------------------------------------------------------
    def load(self, ref: str) -> AdapterInfo:
        """Make ``ref`` resident (a no-op when it is); evicts least recently used adapters to fit."""
        from adapters.artifact import CONFIG_FILE, check_base
        from adapters.runtime.adapter_parts import read_adapter_files
        from adapters.runtime.ensemble import ensemble_info, is_ensemble, parse

        if is_ensemble(ref):  # its members become resident; the ensemble itself is only a ref
            return ensemble_info(self, parse(ref))
        while True:
            with self._lock:
                name = self._refs.get(ref)
                if name is not None:
                    self._cache.touch(name)
                    return self._info(name)
                pending = self._pending.get(ref)
                if pending is None:
                    info = AdapterInfo(ref=ref, state=LOADING)
                    self._pending[ref] = (info, threading.Event())
                    self._failed.pop(ref, None)
                    break
            pending[1].wait()  # another thread is loading it; then look again

        try:
            from adapters_store.errors import InvalidName

            try:
                path = Path(self._resolve(ref))
            except UnknownAdapterError:
                raise
            except InvalidName as exc:  # no adapter can have this name: nothing to remember
                raise UnknownAdapterError(exc.message, exc.hint) from None
            except (LookupError, FileNotFoundError) as exc:  # a store resolver's own "not found"
                raise UnknownAdapterError(f"unknown adapter '{ref}': {exc}", "check the ref") from None
            if not (path / CONFIG_FILE).is_file():
                raise UnknownAdapterError(f"unknown adapter '{ref}' ({path} is not an adapter directory)",
                                          "check the ref")
            files = read_adapter_files(path)
            check_base(files.meta, self.fingerprint, self.base.id, shown=f"'{ref}'",
                       hint="serve it from an engine on its own base")
            matrices = self._lora_matrices(files) if files.method == "lora" else None
            nbytes = self._resident_bytes(files, matrices)
            with self._lock:
                if files.name in self._cache:  # same content already resident under another ref
                    entry = self._cache.get(files.name)
                    entry.info.refs.append(ref)
                    entry.doomed = False  # unloaded while in use, then asked for again: keep it
                else:
                    for victim in self._victims(nbytes):
                        self._drop(victim)
                    resident = self._install(files, matrices)
                    virtual = 0 if resident.prefix is None else resident.prefix[0][0].shape[1]
                    entry = Entry(AdapterInfo(ref=ref, state=READY, name=files.name, task=files.task,
                                              method=files.method, labels=files.labels, bytes=nbytes,
                                              path=str(path), refs=[ref], virtual_tokens=virtual), resident)
                    self._cache.add(files.name, entry)
                self._refs[ref] = files.name
                self._cache.touch(files.name)
                return self._info(files.name)
        except UnknownAdapterError:
            raise
        except Exception as exc:
            with self._lock:
                self._failed[ref] = AdapterInfo(ref=ref, state=FAILED, error=str(exc).splitlines()[0])
            raise
        finally:
            with self._lock:
                _, done = self._pending.pop(ref)
            done.set()

    def _victims(self, nbytes: int) -> list[str]:
        deadline = time.monotonic() + self.pin_wait_s
        while True:
            try:
                return self._cache.victims(nbytes)
            except CacheFullError:
                left = deadline - time.monotonic()
                if nbytes > self._cache.max_bytes or left <= 0:
                    raise
                self._unpinned.wait(left)

    def unload(self, ref: str) -> None:
        """Drop ``ref`` (and every other ref to the same content); deferred while a call uses it."""
        with self._lock:
            if self._failed.pop(ref, None) is not None and ref not in self._refs:
                return
            name = self._refs.get(ref)
            if name is None:
                raise UnknownAdapterError(f"adapter '{ref}' is not loaded", "see engine.adapters()")
            entry = self._cache.get(name)
            if entry.pins:
                entry.doomed = True
                for r in entry.info.refs:
                    self._refs.pop(r, None)
            else:
                self._drop(name)

    def adapters(self) -> list[AdapterInfo]:
        with self._lock:
            return ([info for info, _ in self._pending.values()] + self._cache.snapshot()
                    + list(self._failed.values()))

    def _info(self, name: str) -> AdapterInfo:
        from dataclasses import replace

        info = self._cache.get(name).info
        return replace(info, refs=list(info.refs))

    def _install(self, files, matrices: dict | None) -> Resident:
        """Put one adapter's parts in place (caller holds the lock); returns what to keep of it."""
        from adapters.errors import BaseMismatchError
        from adapters.runtime.adapter_parts import prefix_layers
        from adapters.runtime.heads import Head, head_template, label_count

        task = TASKS[files.task]
        if task.needs_decoder and not self.is_decoder:
            raise BaseMismatchError(f"a causal LM adapter cannot run on the encoder base '{self.base.id}'",
                             "serve it from an engine on a decoder base")
        resident = Resident(task=files.task, method=files.method)
        if files.method == "prefix":
            cfg = files.peft_config
            layers = prefix_layers(files.prefix.to(self.device, self.dtype), cfg)
            expected = self._kv_shape()
            got = (len(layers), *layers[0][0].shape[::2])
            if got != expected:
                raise BaseMismatchError(f"prefix adapter {files.path} has (layers, kv heads, head dim) {got}, "
                                 f"this base needs {expected}", "it was trained on another base")
            resident.prefix = layers
        if task.labels == "row":  # a label per row: a classifier head over the shared body
            n_labels = label_count(files.head, files.labels)
            if n_labels not in self._head_templates:
                self._head_templates[n_labels] = head_template(self.config, n_labels)
            resident.head = Head(self._head_templates[n_labels], files.head, files.labels, self.model, self.dtype,
                                   self.device)
        if matrices is not None:
            self.lora.add(files.name, matrices)
        return resident

    def _kv_shape(self) -> tuple[int, int, int]:
        cfg = self.config.get_text_config()
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cfg.num_hidden_layers, heads, head_dim

    def _lora_matrices(self, files) -> dict:
        """The adapter's LoRA matrices, checked against this base's layers."""
        from adapters.errors import BaseMismatchError
        from adapters.runtime.lora import LoraFitError, lora_matrices

        try:
            matrices = lora_matrices(files.lora, files.peft_config)
            self.lora.cost(matrices)  # checks every module and shape
        except LoraFitError as exc:
            raise BaseMismatchError(f"LoRA adapter {files.path} does not fit this base: {exc}",
                                    "the adapter does not fit this base; serve it from an engine on the base "
                                    "it was trained on") from None
        return matrices

    def _resident_bytes(self, files, matrices: dict | None) -> int:
        """What the adapter will hold once resident, which the cache's max_bytes counts: its LoRA
        matrices as the bank keeps them (rank bucket, compute dtype), its prefix's key/values and
        its head, both in the compute dtype."""
        size = torch.empty(0, dtype=self.dtype).element_size()
        tensors = [*files.head.values(), *([files.prefix] if files.prefix is not None else [])]
        held = sum(t.numel() * (size if t.is_floating_point() else t.element_size()) for t in tensors)
        return held + (self.lora.cost(matrices) if matrices is not None else 0)

    def _drop(self, name: str) -> None:
        entry = self._cache.pop(name)
        if entry is None:
            return
        for ref in entry.info.refs:
            if self._refs.get(ref) == name:
                del self._refs[ref]
        self.lora.remove(name)

    @contextlib.contextmanager
    def _pinned(self, refs: list[str | None]):
        """Resolve each row's adapter (loading it when needed) and hold it resident for the call."""
        wanted = list(dict.fromkeys(r for r in refs if r not in (None, BASE)))
        if len(wanted) > self._cache.max_count:
            raise CacheFullError(f"{len(wanted)} distinct adapters in one call, max_adapters={self._cache.max_count}",
                                 "split the batch or raise max_adapters")
        while True:
            names = {ref: self.load(ref).name for ref in wanted}
            with self._lock:
                # An adapter evicted between its load and here (by another thread): load again.
                if all(name in self._cache for name in names.values()):
                    entries = [self._cache.get(name) for name in names.values()]
                    for entry in entries:
                        entry.pins += 1
                        self._cache.touch(entry.info.name)
                    break
        try:
            yield [None if r in (None, BASE) else self._cache.get(names[r]) for r in refs]
        finally:
            with self._lock:
                for entry in entries:
                    entry.pins -= 1
                    if entry.doomed and entry.pins == 0:
                        self._drop(entry.info.name)
                self._unpinned.notify_all()

    # ---- one forward pass over mixed rows ---------------------------------------------------------
    def _hooks(self, entries):
        return self.lora.routed([e.info.name if e is not None and e.resident.method == "lora" else None
                                 for e in entries])

    def _check_task(self, refs: list, entries: list, generative: bool) -> None:
        """Every row's adapter does what the call asks: generate text or classify (the bare base
        only generates)."""
        for ref, e in zip(refs, entries):
            if e is None:
                if not generative:
                    raise UsageError(f"'{ref}' is not a classification adapter", "use generate() for it")
            elif TASKS[e.resident.task].generative != generative:
                if generative:
                    raise UsageError(f"'{ref}' is a classification adapter", "use classify() for it")
                raise UsageError(f"'{ref}' is not a classification adapter", "use generate() for it")

    def _prefixes(self, entries) -> tuple[list, list[int]]:
        prefixes = [e.resident.prefix if e is not None else None for e in entries]
        return prefixes, [0 if p is None else p[0][0].shape[1] for p in prefixes]

    def _pad(self, rows: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, sl] = torch.tensor(r, dtype=torch.long)
            mask[i, sl] = 1
        return ids.to(self.device), mask.to(self.device)

    # ---- classification --------------------------------------------------------------------------
    @torch.no_grad()
    def classify(self, texts: list[str] | str, adapters: list[str] | str | None = None,
                 text_pairs: list[str] | None = None, *, adapter: str | None = None) -> list[dict]:
        """One row per text, each through its own classification adapter (``adapters``, one per
        row, or ``adapter`` for all; an ``ensemble:a@1+b@2`` ref averages its members'
        probabilities); returns ``{"label", "probabilities": {label: p}}`` per row."""
        from adapters.runtime.ensemble import RowPlan
        from adapters.runtime.prefix import batch_prefix, cache_kwargs, make_cache, position_ids

        texts = [texts] if isinstance(texts, str) else list(texts)
        adapters = adapter if adapters is None else adapters
        adapters = [adapters] * len(texts) if adapters is None or isinstance(adapters, str) else list(adapters)
        if len(texts) != len(adapters):
            raise ValueError(f"{len(texts)} texts but {len(adapters)} adapters")
        if not texts:
            return []
        plan = RowPlan(adapters)
        if not plan.trivial:  # ensemble rows: one row per member, all in this one batch
            rows = self.classify(plan.spread(texts), plan.adapters, plan.spread(text_pairs))
            return plan.combine_classifications(rows)
        with self._pinned(adapters) as entries:
            self._check_task(adapters, entries, generative=False)
            enc = self.tokenizer(texts, text_pairs, truncation=True)
            # Decoders read the last real token: pad left; encoders pad right. With explicit
            # position ids either side gives the unpadded result.
            ids, mask = self._pad(enc["input_ids"], left=self.is_decoder)
            extra = {}
            if "token_type_ids" in enc and not self.is_decoder:
                extra["token_type_ids"], _ = self._pad(enc["token_type_ids"], left=False)
                extra["token_type_ids"] = extra["token_type_ids"].masked_fill(mask == 0, 0)
            prefixes, offsets = self._prefixes(entries)
            with self._lock:
                layers, prefix_mask = batch_prefix(prefixes, self._kv_shape()[0], self.dtype, self.device)
                with self._hooks(entries):
                    # The prefixes go in under the name this body's forward takes (prefix.cache_argument).
                    out = self.body(input_ids=ids, attention_mask=torch.cat([prefix_mask, mask], 1),
                                    position_ids=position_ids(mask, offsets),
                                    **cache_kwargs(self.body, make_cache(layers)), use_cache=False, **extra)
                hidden = out.last_hidden_state
                results: list[dict | None] = [None] * len(texts)
                groups: dict[str, list[int]] = {}
                for i, e in enumerate(entries):
                    groups.setdefault(e.info.name, []).append(i)
                for rows in groups.values():
                    head = entries[rows[0]].resident.head
                    idx = torch.tensor(rows, device=self.device)
                    logits = head.logits(hidden[idx], ids[idx], mask[idx])
                    for i, p in zip(rows, torch.softmax(logits.float(), dim=-1)):
                        results[i] = {"label": head.labels[int(p.argmax())],
                                      "probabilities": {lab: float(v) for lab, v in zip(head.labels, p)}}
        return results

    # ---- generation ------------------------------------------------------------------------------
    def generate(self, prompts: list[str] | str, adapters: list[str | None] | str | None = None,
                 max_new_tokens=64, temperature=0.0, top_p=1.0, seed=None, stop=None, raw: bool = False,
                 logprobs: bool = False) -> list[GenerationResult]:
        """Complete each prompt with its row's adapter (None or "__base__": the bare base; an
        ``ensemble:a@1+b@2`` ref samples from its members' mixed next-token distributions) in one
        batch. Options are a scalar or one value per row. ``raw`` skips the chat template;
        ``logprobs`` records each generated token's log-probability."""
        return self.run(requests_for(prompts, adapters, max_new_tokens=max_new_tokens, temperature=temperature,
                                     top_p=top_p, seed=seed, stop=stop, raw=raw, logprobs=logprobs))

    def run(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Complete every request in one batch; one result per request, in order."""
        if not requests:
            return []
        steps = self._steps(requests)
        with contextlib.closing(steps):  # closing unpins at once on an early break
            return self.decoder.complete(steps, requests)

    def stream(self, prompt: str, adapter: str | None = None, max_new_tokens=64, temperature=0.0, top_p=1.0,
               seed=None, stop=None, raw: bool = False) -> TextStream:
        """Yield the completion's text piece by piece; the pieces join to ``generate``'s text. Once
        exhausted, the stream's ``finish_reason`` ("stop" or "length") and ``tokens`` are set."""
        return self.stream_request(GenerationRequest(prompt, adapter, max_new_tokens, temperature, top_p, seed,
                                                     stop or (), raw))

    def stream_request(self, request: GenerationRequest) -> TextStream:
        """``stream`` for one prepared request."""
        return self.decoder.stream(self._steps([request]), request)

    def _steps(self, requests: list[GenerationRequest]):
        """Pin the requests' adapters, tokenize and pad their prompts, batch their prefixes, then
        hand the batch to the decoder; the adapters stay pinned until the steps end or are closed."""
        from adapters.runtime.ensemble import RowPlan
        from adapters.runtime.prefix import batch_prefix, make_cache, position_ids

        if not self.is_decoder:
            raise UsageError(f"the base '{self.base.id}' is an encoder; it cannot generate text",
                             "serve causal LM adapters from an engine on a decoder base")
        # An ensemble row decodes as one row per member; their distributions are mixed per step.
        plan = RowPlan([r.adapter for r in requests])
        with self._pinned(plan.adapters) as entries:
            self._check_task(plan.adapters, entries, generative=True)
            rows = plan.spread(self._encode(requests))
            ids, mask = self._pad(rows, left=True)
            prefixes, offsets = self._prefixes(entries)
            with self._lock:
                layers, prefix_mask = batch_prefix(prefixes, self._kv_shape()[0], self.dtype, self.device)
            batch = Prefill(ids, torch.cat([prefix_mask, mask], 1), position_ids(mask, offsets), make_cache(layers),
                            plan, lambda: self._hooks(entries), [len(r) for r in rows])
            yield from self.decoder.steps(batch, requests)

    def _encode(self, requests: list[GenerationRequest]) -> list[list[int]]:
        """Each request's prompt tokens: the ones it carries, else its text (in the chat template
        unless ``raw``) tokenized, all texts in one tokenizer call."""
        from adapters.base.loading import format_prompt

        todo = [i for i, r in enumerate(requests) if r.prompt_ids is None]
        rows: list = [list(r.prompt_ids) if r.prompt_ids is not None else None for r in requests]
        if todo:
            texts = [requests[i].prompt if requests[i].raw else format_prompt(self.tokenizer, requests[i].prompt)
                     for i in todo]
            for i, ids in zip(todo, self.tokenizer(texts, add_special_tokens=False)["input_ids"]):
                rows[i] = ids
        if any(not r for r in rows):
            raise UsageError("an empty prompt", "send at least one token of text")
        return rows
