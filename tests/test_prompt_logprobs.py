"""Prompt log-probabilities (echo + logprobs), what lm-evaluation-harness's loglikelihood tasks
read: for every prompt token, its log-probability given the tokens before it, under the row's
adapter, in a batch that mixes adapters, equal to one plain peft forward pass over that prompt."""

import pytest
import torch

from adapters.runtime import Engine
from adapters.runtime.requests import GenerationRequest

PROMPTS = ["the cat sat on the mat", "hello there, how are you today", "a b c"]


@pytest.fixture(scope="module")
def engine(tiny_llama):
    return Engine(str(tiny_llama), quant="none", device="cpu")


def _reference(base, adapter, ids: list[int]) -> torch.Tensor:
    """log p(token_j | tokens before it) for j >= 1, from plain transformers (+ peft)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        logits = model.eval()(input_ids=torch.tensor([ids])).logits[0].float()
    scores = torch.log_softmax(logits[:-1], -1)
    return scores.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)


def test_prompt_scores_equal_plain_peft_row_by_row_in_a_mixed_batch(engine, tiny_llama, gen_adapters):
    tok = engine.tokenizer
    rows = [(PROMPTS[0], gen_adapters["A"]), (PROMPTS[1], None), (PROMPTS[2], gen_adapters["P"]),
            (PROMPTS[1], gen_adapters["B"])]
    requests = [GenerationRequest(p, str(a) if a else None, max_new_tokens=1, raw=True, echo=True, logprobs=True,
                                  top_logprobs=3, prompt_ids=tok(p, add_special_tokens=False)["input_ids"])
                for p, a in rows]
    results = engine.run(requests)
    for (prompt, adapter), request, result in zip(rows, requests, results):
        ids = list(request.prompt_ids)
        got = result.prompt_logprobs
        assert [t for t, _, _ in got] == ids and got[0][1] is None
        want = _reference(tiny_llama, adapter, ids)
        assert torch.allclose(torch.tensor([lp for _, lp, _ in got[1:]]), want, atol=1e-4), (prompt, adapter)
        for _, lp, top in got[1:]:
            assert len(top) == 3 and top[0][1] >= lp - 1e-6 and all(a[1] >= b[1] for a, b in zip(top, top[1:]))
        assert len(result.logprobs) == len(result.top_logprobs) == len(result.scored_ids) == 1  # eos too


def test_max_tokens_zero_scores_the_prompt_and_generates_nothing(engine):
    ids = engine.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    (result,) = engine.run([GenerationRequest(PROMPTS[0], None, max_new_tokens=0, raw=True, echo=True, logprobs=True,
                                              prompt_ids=ids)])
    assert result.tokens == 0 and result.text == "" and len(result.prompt_logprobs) == len(ids)
    with pytest.raises(ValueError, match="0 only with echo"):
        GenerationRequest("x", max_new_tokens=0)


def test_an_end_of_sequence_token_is_scored_though_not_shown(engine):
    """lm-evaluation-harness reads prompt_len + 1 entries with max_tokens=1; when the model's next
    token ends the text, that token is still scored (and counted nowhere in the text or usage)."""
    from adapters.runtime.generate import Decoder, Step

    eos = engine.tokenizer.eos_token_id
    decoder = Decoder(None, engine.tokenizer, {eos}, None)
    request = GenerationRequest("x", None, max_new_tokens=1, raw=True, logprobs=True, top_logprobs=1)
    (result,) = decoder.complete(iter([Step([eos], [-0.25], [[(eos, -0.25)]])]), [request])
    assert result.scored_ids == [eos] and result.logprobs == [-0.25] and result.top_logprobs == [[(eos, -0.25)]]
    assert result.tokens == 0 and result.text == "" and result.finish_reason == "stop"


def _mixed(engine, gen_adapters):
    """Echo rows (LoRA A, prefix P) beside plain rows (LoRA B generating 3 tokens, the bare base)."""
    tok = engine.tokenizer
    rows = [(PROMPTS[1], gen_adapters["A"], True), (PROMPTS[0], gen_adapters["B"], False),
            (PROMPTS[2], gen_adapters["P"], True), (PROMPTS[0], None, False)]
    return [GenerationRequest(p, str(a) if a else None, max_new_tokens=1 if echo else 3, raw=True, echo=echo,
                              logprobs=echo, top_logprobs=2 if echo else 0,
                              prompt_ids=tok(p, add_special_tokens=False)["input_ids"]) for p, a, echo in rows]


def test_the_head_computes_only_the_logits_that_are_read(engine, gen_adapters, monkeypatch):
    """A batch mixing echo and plain rows: the LM head's first call covers each row's last position
    and the echo rows' prompt positions, nothing more, and every row gets what it gets alone."""
    head = engine.model.get_output_embeddings()
    forward, positions = head.forward, []

    def counted(x, *args, **kwargs):
        positions.append(x.shape[0] * x.shape[1])
        return forward(x, *args, **kwargs)

    requests = _mixed(engine, gen_adapters)
    monkeypatch.setattr(head, "forward", counted)
    results = engine.run(requests)
    monkeypatch.undo()
    scored = sum(len(r.prompt_ids) - 1 for r in requests if r.echo)
    assert positions[0] == len(requests) + scored
    assert set(positions[1:]) == {len(requests)}  # the decode steps: one position per row
    for request, result in zip(requests, results):
        (alone,) = engine.run([request])
        assert result.text == alone.text and result.token_ids == alone.token_ids
        if request.echo:
            assert [t for t, _, _ in result.prompt_logprobs] == [t for t, _, _ in alone.prompt_logprobs]
            assert torch.allclose(torch.tensor([lp for _, lp, _ in result.prompt_logprobs[1:]]),
                                  torch.tensor([lp for _, lp, _ in alone.prompt_logprobs[1:]]), atol=1e-5)


def test_a_head_with_its_own_hook_gets_whole_rows_and_the_same_scores(engine, gen_adapters):
    """A forward hook on the head (how a LoRA on lm_head is routed, row by row) keeps the batch's
    rows whole: the head then sees every row's last positions, as many as the longest echo prompt,
    and the scores are the same."""
    requests = _mixed(engine, gen_adapters)
    packed = engine.run(requests)
    head = engine.model.get_output_embeddings()
    shapes = []
    handle = head.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape[:2])))
    try:
        whole = engine.run(requests)
    finally:
        handle.remove()
    assert shapes[0] == (len(requests), max(len(r.prompt_ids) for r in requests if r.echo))
    for a, b in zip(packed, whole):
        assert a.text == b.text
        if a.prompt_logprobs is not None:
            assert torch.allclose(torch.tensor([lp for _, lp, _ in a.prompt_logprobs[1:]]),
                                  torch.tensor([lp for _, lp, _ in b.prompt_logprobs[1:]]), atol=1e-5)
            assert [[t for t, _ in top] for _, _, top in a.prompt_logprobs] == \
                [[t for t, _ in top] for _, _, top in b.prompt_logprobs]
