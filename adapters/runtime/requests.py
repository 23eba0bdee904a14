"""One generation request, as it travels from the caller (the HTTP server, ``Engine.generate``)
through the batcher to the decode loop: the prompt, the adapter and the decoding options.

Built once per completion and checked when built; every later stage reads it and none changes
it (a server's ``n`` choices are copies with their own seeds). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationRequest:
    """``prompt`` is the user's text, wrapped in the base's chat template unless ``raw``;
    ``prompt_ids``, when given, are its tokens already (the server counts them against its limits,
    so the engine does not tokenize the prompt again). ``adapter``: a ref, an ``ensemble:`` ref, or
    None / ``BASE`` for the bare base. ``stop`` strings end the completion (not shown);
    ``logprobs`` records each generated token's log-probability, with the ``top_logprobs`` most
    likely tokens beside it; ``echo`` with ``logprobs`` scores the prompt's tokens too (each given
    the ones before it), the way lm-evaluation-harness computes loglikelihoods. ``max_new_tokens``
    may be 0 only with ``echo``: the prompt is scored and nothing generated."""

    prompt: str
    adapter: str | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    raw: bool = False
    logprobs: bool = False
    prompt_ids: tuple[int, ...] | None = None
    top_logprobs: int = 0
    echo: bool = False

    def __post_init__(self) -> None:
        if int(self.max_new_tokens) < (0 if self.echo else 1):
            raise ValueError("max_new_tokens must be at least 1 (0 only with echo)")
        if int(self.top_logprobs) < 0:
            raise ValueError("top_logprobs must be >= 0")
        t, p = float(self.temperature), float(self.top_p)
        if t < 0 or not 0 < p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        if t < 1e-5 or p < 1e-6:
            # Temperatures near 0 overflow the scaled logits and a top_p below float32's resolution
            # keeps no token; the limit of both is greedy decoding, which is what such rows get.
            t, p = 0.0, 1.0
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        set_ = object.__setattr__  # normalised once, here: the dataclass is frozen
        set_(self, "max_new_tokens", int(self.max_new_tokens))
        set_(self, "top_logprobs", int(self.top_logprobs))
        set_(self, "temperature", t)
        set_(self, "top_p", p)
        set_(self, "seed", None if self.seed is None else int(self.seed))
        set_(self, "stop", tuple(s for s in stops if s))
        if self.prompt_ids is not None:
            set_(self, "prompt_ids", tuple(self.prompt_ids))


def requests_for(prompts: list[str] | str, adapters=None, **options) -> list[GenerationRequest]:
    """One request per prompt for the batch API: ``adapters`` and every option are one value for
    all rows or a list with one value per row (``stop``: a string or list of strings for all rows,
    or one list per row)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    n = len(prompts)
    rows: dict[str, list] = {}
    for name, value in {"adapter": adapters, **options}.items():
        per_row = isinstance(value, (list, tuple)) and not (
            name == "stop" and all(isinstance(v, str) for v in value))  # a list of stop strings: for all rows
        if not per_row:
            rows[name] = [value] * n
        elif len(value) != n:
            raise ValueError(f"{n} prompts but {len(value)} adapters" if name == "adapter"
                             else f"{name}: {len(value)} values for {n} prompts")
        else:
            rows[name] = list(value)
    return [GenerationRequest(prompt, **{name: rows[name][i] for name in rows}) for i, prompt in enumerate(prompts)]
