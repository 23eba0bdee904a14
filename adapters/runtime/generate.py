"""The engine's own decode loop (``Decoder``): token choice, stop conditions, text.

The engine decodes step by step itself (rather than calling ``model.generate``) because rows carry
different prefixes, so their position ids and attention masks are built per row; the same loop
serves ``generate`` (a batch) and ``stream`` (pieces of one row as they come). The engine pins the
adapters and builds the first step's inputs (``Prefill``); the decoder only runs the model.
Sampling uses one ``torch.Generator`` per row, seeded from the request: a row's sampled text
depends on its seed and its own logits, not on which other requests share its batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from adapters.errors import UsageError
from adapters.runtime.requests import GenerationRequest

if TYPE_CHECKING:
    from adapters.runtime.ensemble import RowPlan


@dataclass
class GenerationResult:
    text: str
    tokens: int  # generated tokens, the stop/eos token excluded (for usage counts)
    finish_reason: str  # "stop" (eos or a stop string) | "length"
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None  # per generated token, when asked for
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per generated token: the k likeliest
    # echo + logprobs: per prompt token (token id, its log-probability given the tokens before it,
    # the k likeliest there); the first token's is None, nothing comes before it.
    prompt_logprobs: list[tuple[int, float | None, list[tuple[int, float]]]] | None = None
    # The generated tokens ``logprobs`` scores: ``token_ids`` and, when the model ended the text, its
    # end-of-sequence token (scored, as OpenAI's API and lm-evaluation-harness expect, not shown).
    scored_ids: list[int] | None = None


def make_generator(request: GenerationRequest) -> torch.Generator | None:
    if request.temperature == 0:
        return None
    g = torch.Generator(device="cpu")
    if request.seed is None:
        g.seed()
    else:
        g.manual_seed(request.seed)
    return g


def choose(logits: torch.Tensor, request: GenerationRequest, generator: torch.Generator | None) -> int:
    """Greedy (temperature 0) or temperature + nucleus sampling of one row's next token."""
    logits = logits.float().cpu()
    if request.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / request.temperature, dim=-1)
    if request.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest set whose mass reaches top_p (the most likely token always stays)
        keep = sorted_probs.cumsum(-1) - sorted_probs < request.top_p
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


@dataclass
class Prefill:
    """One pinned batch, ready for its first forward pass: the engine builds it (adapters pinned,
    prompts tokenized and left-padded, prefixes batched) and the decoder runs it."""

    ids: torch.Tensor  # [model rows, prompt width]
    attention: torch.Tensor  # [model rows, virtual tokens + prompt width]
    positions: torch.Tensor
    cache: Any  # the prefixes' key/values (prefix.make_cache), grown by every step
    plan: RowPlan  # caller rows <-> model rows (an ensemble row runs as one row per member)
    route: Callable[[], contextlib.AbstractContextManager]  # the rows' LoRA hooks, around one forward
    lengths: list[int] = field(default_factory=list)  # each model row's prompt tokens (before padding)


@dataclass
class Step:
    """One decode step: per request, the token chosen (None once done), its log-probability and
    the likeliest alternatives when asked; on the first step, the prompts' scores (echo)."""

    chosen: list[int | None]
    logprobs: list[float | None]
    top: list[list[tuple[int, float]] | None]
    prompts: list | None = None


def _top(scores: torch.Tensor, k: int) -> list[tuple[int, float]]:
    values, indices = torch.topk(scores, min(k, scores.shape[-1]))
    return list(zip(indices.tolist(), values.tolist()))


def _prompt_scores(prompt_logits: dict[int, torch.Tensor], ids: torch.Tensor, lengths: list[int],
                   requests: list[GenerationRequest]) -> list:
    """For each echo request: (token, log-probability given the tokens before it, the k likeliest)
    per prompt token, the first one unscored. ``prompt_logits[i]`` holds row i's logits at its
    prompt's positions but the last (each predicts the next token); prompts are left-padded, so a
    prompt of n tokens is the last n columns of its row."""
    out: list = [None] * len(requests)
    width = ids.shape[1]
    for i, logits in prompt_logits.items():
        request, n = requests[i], lengths[i]  # echo needs a trivial plan: model row i is request i
        row = ids[i, width - n:].tolist()
        scores = torch.log_softmax(logits.float(), -1)
        picked = scores.gather(1, ids[i, width - n + 1:, None]).squeeze(1).tolist()
        k = min(request.top_logprobs, scores.shape[-1])
        if k and picked:
            values, indices = torch.topk(scores, k, dim=-1)
            tops = [list(zip(ix, vs)) for ix, vs in zip(indices.tolist(), values.tolist())]
        else:
            tops = [[] for _ in picked]
        out[i] = [(row[0], None, [])] + list(zip(row[1:], picked, tops))
    return out


class _PackPositions:
    """A pre-hook on the LM head for the first step of a batch with echo rows: the head gets only
    the positions whose logits are read, every row's last and the echo rows' prompt positions,
    packed as one sequence (``[1, positions, hidden]``), instead of every position of every row
    (rows x width x vocabulary logits, most of them thrown away). What the model's forward does
    to the head's output afterwards (a logit scale, soft-capping) is elementwise, so it applies
    to the packed logits alike."""

    def __init__(self, firsts: dict[int, int]):
        self.firsts = firsts  # echo row -> the column its prompt starts at
        self.width = 0

    def __call__(self, module, args):
        hidden = args[0]  # [rows, width, hidden]
        self.width = hidden.shape[1]
        parts = [hidden[:, -1]] + [hidden[i, first:-1] for i, first in self.firsts.items()]
        return (torch.cat(parts)[None], *args[1:])

    def split(self, logits: torch.Tensor, rows: int) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The packed logits as each row's last position and each echo row's prompt positions."""
        flat, at, prompts = logits[0], rows, {}
        for i, first in self.firsts.items():
            n = self.width - 1 - first
            prompts[i], at = flat[at:at + n], at + n
        return flat[:rows], prompts


class Decoder:
    """The decode loop of an engine: ``steps`` runs a ``Prefill`` to its end, ``complete`` and
    ``stream`` turn the steps into results or streamed text. ``lock`` is the engine's model lock,
    held for one forward pass per step, so concurrent batches interleave by step."""

    def __init__(self, model, tokenizer, eos_ids: set[int], lock) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.lock = lock

    def steps(self, batch: Prefill, requests: list[GenerationRequest]) -> Iterator[Step]:
        """Decode all rows together; yields each step's new token per request (None once it is
        done) and, for requests that ask, its log-probability under the row's model (before
        temperature) with the likeliest alternatives. The first step also scores the prompts of
        requests with ``echo`` and ``logprobs``."""
        from adapters.runtime.prefix import cache_kwargs, returned_cache

        generators = [make_generator(r) for r in requests]
        logprobs = any(r.logprobs for r in requests)
        echo = [i for i, r in enumerate(requests) if r.echo and r.logprobs]
        ids, attention, positions, cache, plan = batch.ids, batch.attention, batch.positions, batch.cache, batch.plan
        if echo and not plan.trivial:
            raise UsageError("prompt logprobs (echo) of an ensemble are not supported",
                             "ask them of one adapter at a time")
        done = [r.max_new_tokens == 0 for r in requests]
        if all(done) and not echo:
            return  # nothing to generate and no prompt to score (echo without logprobs shows the text only)
        width = ids.shape[1]
        firsts = {i: width - batch.lengths[i] for i in echo}  # echo row -> its prompt's first column
        for step in range(max(1, max(r.max_new_tokens for r in requests))):
            with self.lock, batch.route(), torch.no_grad():
                # The cache goes in and comes back under the name the forward takes (prefix.cache_argument).
                inputs = {"input_ids": ids, "attention_mask": attention, "position_ids": positions,
                          **cache_kwargs(self.model, cache), "use_cache": True}
                out, last, prompt_logits = self._forward(inputs, firsts if step == 0 else None)
            cache = returned_cache(self.model, out)
            prompts = _prompt_scores(prompt_logits, ids, batch.lengths, requests) if prompt_logits else None
            logits = plan.combine_logits(last)
            chosen: list[int | None] = []
            scores = torch.log_softmax(logits.float(), -1) if logprobs else None
            # Greedy rows: one argmax over the batch (the same pick as choose() row by row).
            greedy = logits.argmax(-1).tolist() if any(r.temperature == 0 for r in requests) else None
            for i, request in enumerate(requests):
                if done[i]:
                    chosen.append(None)
                    continue
                token = greedy[i] if request.temperature == 0 else choose(logits[i], request, generators[i])
                chosen.append(token)
                if token in self.eos_ids or step + 1 >= request.max_new_tokens:
                    done[i] = True
            yield Step(chosen, [None if t is None or scores is None else float(scores[i, t])
                                for i, t in enumerate(chosen)],
                       [_top(scores[i], r.top_logprobs) if t is not None and r.top_logprobs and scores is not None
                        else None for i, (t, r) in enumerate(zip(chosen, requests))], prompts)
            if all(done):
                return
            # Finished rows keep decoding a pad token (cheaper than reshaping the cache).
            next_ids = plan.spread([t if t is not None else self.tokenizer.pad_token_id for t in chosen])
            ids = torch.tensor(next_ids, dtype=torch.long, device=ids.device)[:, None]
            positions = positions.max(dim=1, keepdim=True).values + 1
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)

    def _forward(self, inputs: dict, firsts: dict[int, int] | None):
        """One forward pass (under the lock and the rows' routing): the output, each row's logits at
        its last position, and with ``firsts`` (echo row -> its prompt's first column) each echo
        row's logits at its prompt's positions but the last, the only other logits computed."""
        if not firsts:
            out = self.model(**inputs, logits_to_keep=1)
            return out, out.logits[:, -1], None
        head = self.model.get_output_embeddings()
        rows, width = inputs["input_ids"].shape
        if head._forward_hooks:
            # A LoRA on the head routes row by row, so its rows stay whole: every row keeps the
            # positions of the longest echo prompt (the slice is taken before the head).
            keep = width - min(firsts.values())
            out = self.model(**inputs, logits_to_keep=keep)
            return out, out.logits[:, -1], {i: out.logits[i, first - width:-1] for i, first in firsts.items()}
        pack = _PackPositions(firsts)
        handle = head.register_forward_pre_hook(pack)
        try:
            out = self.model(**inputs, logits_to_keep=0)  # 0: the head's input is every position
        finally:
            handle.remove()
        last, prompt_logits = pack.split(out.logits, rows)
        return out, last, prompt_logits

    def complete(self, steps: Iterator[Step], requests: list[GenerationRequest]
                 ) -> list[GenerationResult]:
        """Run ``steps`` until every request is done; one result per request."""
        tokens: list[list[int]] = [[] for _ in requests]
        reasons: list[str | None] = [None] * len(requests)
        texts: list[str | None] = [None] * len(requests)
        scores: list[list[float]] = [[] for _ in requests]
        tops: list[list] = [[] for _ in requests]
        scored: list[list[int]] = [[] for _ in requests]
        prompts: list = [None] * len(requests)
        for step in steps:
            chosen, step_scores = step.chosen, step.logprobs
            if step.prompts is not None:
                prompts = step.prompts
            for i, token in enumerate(chosen):
                if token is None or reasons[i]:
                    continue
                if requests[i].logprobs:  # the end-of-sequence token is scored too, as the model chose it
                    scored[i].append(token)
                    scores[i].append(step_scores[i])
                    tops[i].append(step.top[i] or [])
                if token in self.eos_ids:
                    reasons[i] = "stop"
                    continue
                tokens[i].append(token)
                # The text so far is needed only to look for stop strings; else once, at the end.
                if requests[i].stop:
                    text = self.tokenizer.decode(tokens[i], skip_special_tokens=True)
                    cut = find_stop(text, requests[i].stop)
                else:
                    cut = None
                if cut is not None:
                    reasons[i], texts[i] = "stop", text[:cut]
                elif len(tokens[i]) >= requests[i].max_new_tokens:
                    reasons[i] = "length"
            if all(reasons):
                break
        results = []
        for i, toks in enumerate(tokens):
            text = texts[i] if texts[i] is not None else self.tokenizer.decode(toks, skip_special_tokens=True)
            asked = requests[i].logprobs
            results.append(GenerationResult(text, len(toks), reasons[i] or "length", toks, scores[i] if asked else None,
                                            tops[i] if asked and requests[i].top_logprobs else None, prompts[i],
                                            scored[i] if asked else None))
        return results

    def stream(self, steps: Iterator[Step], request: GenerationRequest) -> TextStream:
        """The text of one request's ``steps``, piece by piece (see ``TextStream``)."""
        out = TextStream()
        out._pieces = self._pieces(steps, request, out)
        return out

    def _pieces(self, steps, request: GenerationRequest, out: TextStream) -> Iterator[str]:
        tokens: list[int] = []
        shown = ""
        out.finish_reason = "length"
        try:
            for step in steps:
                (token,) = step.chosen
                if token is None or token in self.eos_ids:
                    out.finish_reason = "stop"
                    break
                tokens.append(token)
                out.tokens = len(tokens)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                cut = find_stop(text, request.stop) if request.stop else None
                if cut is not None:
                    out.finish_reason = "stop"
                    if cut > len(shown):
                        yield text[len(shown):cut]
                    return
                visible = safe_prefix(text, request.stop)
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
