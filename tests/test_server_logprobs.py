"""The completions and chat logprobs real clients read, over real HTTP: lm-evaluation-harness's
loglikelihood request (token-id prompt, echo, max_tokens 1, logprobs 1) answers prompt_len + 1
entries, the first null, each prompt token's log-probability equal to a plain peft forward pass;
the openai SDK reads chat logprobs with top_logprobs."""

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


def test_echo_with_max_tokens_zero_scores_the_prompt_only(served):
    body = {"model": "chat-a", "prompt": "the cat sat", "max_tokens": 0, "logprobs": 0, "echo": True}
    r = httpx.post(f"{served.url}/v1/completions", json=body, headers=served.headers(), timeout=60)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"] == "the cat sat" and r.json()["usage"]["completion_tokens"] == 0
    scored = choice["logprobs"]
    assert scored["token_logprobs"][0] is None and all(top == {} for top in scored["top_logprobs"][1:])
    assert "".join(choice["logprobs"]["tokens"]) == "the cat sat"


def test_chat_logprobs_through_the_openai_sdk(served):
    client = served.openai()
    out = client.chat.completions.create(model="chat-b", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                         temperature=0, logprobs=True, top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens and content
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob >= entry.logprob - 1e-6
        assert entry.logprob == max(t.logprob for t in entry.top_logprobs)  # greedy: the chosen is the best
    assert "".join(e.token for e in content) == out.choices[0].message.content
