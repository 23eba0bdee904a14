"""lm-evaluation-harness's loglikelihood request over real HTTP (token-id prompts, echo, max_tokens
1, logprobs 1): it answers prompt_len + 1 entries, the first null, each prompt token's
log-probability equal to a plain peft forward pass. The other logprobs fields, through the openai
SDK: tests/test_openai_sdk.py."""

import httpx
import pytest
import torch

from support.server import shared_server


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv):
    return shared_server(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv)


def _peft_scores(base, adapter_dir, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                      str(adapter_dir)).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    scores = torch.log_softmax(logits, -1)
    return scores[:-1].gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1), scores[-1]


def test_the_lm_eval_loglikelihood_request(served, tiny_llama):
    from transformers import AutoTokenizer

    from adapters_store import Store

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    context, continuation = "Question: what is two plus two? Answer:", " four"
    ids = tok(context + continuation, add_special_tokens=False)["input_ids"]
    body = {"model": "chat-a", "prompt": [ids, ids[:-1]], "temperature": 0, "max_tokens": 1, "logprobs": 1,
            "seed": 1234, "echo": True}
    r = httpx.post(f"{served.url}/v1/completions", json=body, headers=served.headers(), timeout=60)
    assert r.status_code == 200, r.text
    with Store(served.root) as s:
        adapter = s.resolve("chat-a").path
    want, last = _peft_scores(tiny_llama, adapter, ids)
    first = sorted(r.json()["choices"], key=lambda c: c["index"])[0]
    lp = first["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) + 1 and lp["token_logprobs"][0] is None
    assert lp["top_logprobs"][0] is None and all(len(top) == 1 for top in lp["top_logprobs"][1:])
    assert torch.allclose(torch.tensor(lp["token_logprobs"][1:len(ids)]), want, atol=1e-4)
    # The generated token is the greedy one, scored under the same distribution.
    assert abs(lp["token_logprobs"][-1] - float(last.max())) < 1e-4
    assert first["text"].startswith(tok.decode(ids)) and lp["text_offset"][0] == 0
    # lm-eval's greedy check reads the best of each position's top_logprobs: it is never below the token's.
    for token_lp, top in zip(lp["token_logprobs"][1:-1], lp["top_logprobs"][1:-1]):
        assert max(top.values()) >= token_lp - 1e-6
