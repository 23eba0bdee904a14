"""The engine's own decode loop (``generate``, ``stream``): token choice, stop conditions, text.

The engine decodes step by step itself (rather than calling ``model.generate``) because rows carry
different prefixes, so their position ids and attention masks are built per row; the same loop
serves ``generate`` (a batch) and ``stream`` (pieces of one row as they come).
Sampling uses one ``torch.Generator`` per row, seeded from the request: a row's sampled text
depends on its seed and its own logits, not on which other requests share its batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from adapters.errors import UsageError


@dataclass
class GenerationResult:
    text: str
    tokens: int  # generated tokens, the stop/eos token excluded (for usage counts)
    finish_reason: str  # "stop" (eos or a stop string) | "length"
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None  # per generated token, when asked for


@dataclass
class RowSpec:
    """One row's decoding options (the batch API takes a scalar or one value per row)."""

    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]


def per_row(value, n: int, name: str) -> list:
    if isinstance(value, (list, tuple)) and not (name == "stop" and all(isinstance(v, str) for v in value)):
        if len(value) != n:
            raise ValueError(f"{name}: {len(value)} values for {n} prompts")
        return list(value)
    return [value] * n


def row_specs(n: int, max_new_tokens, temperature, top_p, seed, stop) -> list[RowSpec]:
    specs = []
    for m, t, p, s, st in zip(per_row(max_new_tokens, n, "max_new_tokens"), per_row(temperature, n, "temperature"),
                              per_row(top_p, n, "top_p"), per_row(seed, n, "seed"), per_row(stop, n, "stop")):
        if int(m) < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if float(t) < 0 or not 0 < float(p) <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        t, p = float(t), float(p)
        if t < 1e-5 or p < 1e-6:
            # Temperatures near 0 overflow the scaled logits and a top_p below float32's resolution
            # keeps no token; the limit of both is greedy decoding, which is what such rows get.
            t, p = 0.0, 1.0
        stops = [st] if isinstance(st, str) else list(st or [])
        specs.append(RowSpec(int(m), t, p, None if s is None else int(s), [x for x in stops if x]))
    return specs


def make_generator(spec: RowSpec) -> torch.Generator | None:
    if spec.temperature == 0:
        return None
    g = torch.Generator(device="cpu")
    if spec.seed is None:
        g.seed()
    else:
        g.manual_seed(spec.seed)
    return g


def choose(logits: torch.Tensor, spec: RowSpec, generator: torch.Generator | None) -> int:
    """Greedy (temperature 0) or temperature + nucleus sampling of one row's next token."""
    logits = logits.float().cpu()
    if spec.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / spec.temperature, dim=-1)
    if spec.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest set whose mass reaches top_p (the most likely token always stays)
        keep = sorted_probs.cumsum(-1) - sorted_probs < spec.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def find_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string starts in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def safe_prefix(text: str, stops: list[str]) -> str:
    """The part of ``text`` that can be shown while streaming: no dangling partial UTF-8 character,
    and nothing that could still turn out to be the start of a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[:end].endswith(s[:k]):
                hold = max(hold, k)
                break
    return text[:end - hold]


class Decoding:
    """``generate`` and ``stream`` for the Engine (split out to keep modules short)."""

    # Uses the engine's state: model, tokenizer, _lock, _pinned, _hooks, _pad, _prefixes.
    def _encode_prompts(self, prompts: list[str], raw: bool) -> list[list[int]]:
        from adapters.data.batching import format_prompt

        texts = prompts if raw else [format_prompt(self.tokenizer, p) for p in prompts]
        rows = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        if any(not r for r in rows):
            raise UsageError("an empty prompt", "send at least one token of text")
        return rows

    def _steps(self, prompts, adapters, specs, raw, logprobs=False) -> Iterator[tuple[list, list]]:
        """Decode all rows together; yields each step's new token per row (None once a row is done)
        and, when asked, its log-probability under the row's model (before temperature)."""
        from adapters.runtime.ensemble import RowPlan
        from adapters.runtime.prefix import batch_prefix, cache_kwargs, make_cache, position_ids, returned_cache

        if not self.is_decoder:
            raise UsageError(f"the base '{self.base.id}' is an encoder; it cannot generate text",
                             "serve causal LM adapters from an engine on a decoder base")
        # An ensemble row decodes as one row per member; their distributions are mixed per step.
        plan = RowPlan(adapters)
        with self._pinned(plan.adapters) as entries:
            for ref, e in zip(plan.adapters, entries):
                if e is not None and e.payload["task"] != "causal-lm":
                    raise UsageError(f"'{ref}' is a classification adapter", "use classify() for it")
            ids, mask = self._pad(self._encode_prompts(plan.spread(prompts), raw), left=True)
            prefixes, offsets = self._prefixes(entries)
            generators = [make_generator(s) for s in specs]
            with self._lock:
                layers, prefix_mask = batch_prefix(prefixes, self._kv_shape()[0], self.dtype, self.device)
            attention = torch.cat([prefix_mask, mask], 1)
            positions = position_ids(mask, offsets)
            cache = make_cache(layers)
            done = [False] * len(prompts)
            for step in range(max(s.max_new_tokens for s in specs)):
                with self._lock, self._hooks(entries), torch.no_grad():
                    # The cache goes in and comes back under the name the forward takes (prefix.cache_argument).
                    out = self.model(input_ids=ids, attention_mask=attention, position_ids=positions,
                                     **cache_kwargs(self.model, cache), use_cache=True, logits_to_keep=1)
                cache = returned_cache(self.model, out)
                logits = plan.combine_logits(out.logits[:, -1])
                chosen: list[int | None] = []
                scores = torch.log_softmax(logits.float(), -1) if logprobs else None
                # Greedy rows: one argmax over the batch (the same pick as choose() row by row).
                greedy = (logits.argmax(-1).tolist() if any(s.temperature == 0 for s in specs) else None)
                for i, spec in enumerate(specs):
                    if done[i]:
                        chosen.append(None)
                        continue
                    token = greedy[i] if spec.temperature == 0 else choose(logits[i], spec, generators[i])
                    chosen.append(token)
                    if token in self.eos_ids or step + 1 >= spec.max_new_tokens:
                        done[i] = True
                yield chosen, [None if t is None or scores is None else float(scores[i, t])
                               for i, t in enumerate(chosen)]
                if all(done):
                    return
                # Finished rows keep decoding a pad token (cheaper than reshaping the cache).
                next_ids = plan.spread([t if t is not None else self.tokenizer.pad_token_id for t in chosen])
                ids = torch.tensor(next_ids, dtype=torch.long, device=self.device)[:, None]
                positions = positions.max(dim=1, keepdim=True).values + 1
                attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)

    def generate(self, prompts: list[str] | str, adapters: list[str | None] | str | None = None,
                 max_new_tokens=64, temperature=0.0,
                 top_p=1.0, seed=None, stop=None, raw: bool = False, logprobs: bool = False
                 ) -> list[GenerationResult]:
        """Complete each prompt with its row's adapter (None or "__base__": the bare base; an
        ``ensemble:a@1+b@2`` ref samples from its members' mixed next-token distributions) in one
        batch. Options are a scalar or one value per row. ``raw`` skips the chat template;
        ``logprobs`` records each generated token's log-probability."""
        from adapters.runtime.engine import per_row

        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        adapters = per_row(adapters, len(prompts))
        if len(prompts) != len(adapters):
            raise ValueError(f"{len(prompts)} prompts but {len(adapters)} adapters")
        if not prompts:
            return []
        specs = row_specs(len(prompts), max_new_tokens, temperature, top_p, seed, stop)
        tokens: list[list[int]] = [[] for _ in prompts]
        reasons: list[str | None] = [None] * len(prompts)
        texts: list[str | None] = [None] * len(prompts)
        scores: list[list[float]] = [[] for _ in prompts]
        steps = self._steps(prompts, adapters, specs, raw, logprobs)
        with contextlib.closing(steps):  # closing unpins at once on an early break
            for chosen, step_scores in steps:
                for i, token in enumerate(chosen):
                    if token is None or reasons[i]:
                        continue
                    if token in self.eos_ids:
                        reasons[i] = "stop"
                        continue
                    tokens[i].append(token)
                    if logprobs:
                        scores[i].append(step_scores[i])
                    # The text so far is needed only to look for stop strings; else once, at the end.
                    if specs[i].stop:
                        text = self.tokenizer.decode(tokens[i], skip_special_tokens=True)
                        cut = find_stop(text, specs[i].stop)
                    else:
                        cut = None
                    if cut is not None:
                        reasons[i], texts[i] = "stop", text[:cut]
                    elif len(tokens[i]) >= specs[i].max_new_tokens:
                        reasons[i] = "length"
                if all(reasons):
                    break
        results = []
        for i, toks in enumerate(tokens):
            text = texts[i] if texts[i] is not None else self.tokenizer.decode(toks, skip_special_tokens=True)
            results.append(GenerationResult(text, len(toks), reasons[i] or "length", toks,
                                            scores[i] if logprobs else None))
        return results

    def stream(self, prompt: str, adapter: str | None = None, max_new_tokens=64, temperature=0.0, top_p=1.0,
               seed=None, stop=None, raw: bool = False) -> TextStream:
        """Yield the completion's text piece by piece; the pieces join to ``generate``'s text. Once
        exhausted, the stream's ``finish_reason`` ("stop" or "length") and ``tokens`` are set."""
        spec = row_specs(1, max_new_tokens, temperature, top_p, seed, stop)[0]
        out = TextStream()
        out._pieces = self._stream_pieces(prompt, adapter, spec, raw, out)
        return out

    def _stream_pieces(self, prompt, adapter, spec: RowSpec, raw: bool, out: TextStream) -> Iterator[str]:
        tokens: list[int] = []
        shown = ""
        steps = self._steps([prompt], [adapter], [spec], raw)
        out.finish_reason = "length"
        try:
            for (token,), _ in steps:
                if token is None or token in self.eos_ids:
                    out.finish_reason = "stop"
                    break
                tokens.append(token)
                out.tokens = len(tokens)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                cut = find_stop(text, spec.stop) if spec.stop else None
                if cut is not None:
                    out.finish_reason = "stop"
                    if cut > len(shown):
                        yield text[len(shown):cut]
                    return
                visible = safe_prefix(text, spec.stop)
                if len(visible) > len(shown):
                    yield visible[len(shown):]
                    shown = visible
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if len(text) > len(shown):
                yield text[len(shown):]
        finally:
            steps.close()  # unpins the adapter when the consumer stops early


class TextStream:
    """The iterator ``Engine.stream`` returns: text pieces, then ``finish_reason`` and ``tokens``."""

    def __init__(self) -> None:
        self.finish_reason: str | None = None  # set when the stream ends
        self.tokens = 0  # generated tokens so far
        self._pieces: Iterator[str] = iter(())

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating (and unpin the adapter) before the end."""
        self._pieces.close()
