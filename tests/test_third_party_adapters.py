"""Adapters written by plain peft with options this project never uses: the engine either gives
what peft gives, row for row, or refuses at load naming the feature. Never a silently other answer."""

import pytest
import torch

from adapters.errors import UsageError
from adapters.runtime import Engine

TEXTS = ["a fine film", "dull and slow", "I laughed a lot", "no"]


def _peft_classifier(tiny_bert, out, **lora):
    """A 2-label BERT classifier adapter saved by plain peft with ``lora`` options, its weights
    perturbed so that LoRA and head both matter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    peft = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, **lora))
    with torch.no_grad():
        for param in peft.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.3)
    peft.save_pretrained(out)
    return out


def _peft_probabilities(tiny_bert, adapter):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2),
                                      str(adapter)).eval()
    with torch.no_grad():
        batch = tok(TEXTS, padding=True, return_tensors="pt")
        return torch.softmax(model(**batch).logits.float(), -1)


@pytest.fixture(scope="module")
def engine(tiny_bert):
    return Engine(str(tiny_bert), quant="none")


def test_plain_lora_on_attention_gives_what_peft_gives(engine, tiny_bert, tmp_path):
    adapter = _peft_classifier(tiny_bert, tmp_path / "plain", target_modules=["query", "value"])
    expected = _peft_probabilities(tiny_bert, adapter)
    rows = engine.classify(TEXTS, adapters=[str(adapter)] * len(TEXTS))
    got = torch.tensor([[row["probabilities"][k] for k in sorted(row["probabilities"])] for row in rows])
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)


@pytest.mark.parametrize("case, lora, named", [
    ("bias all", {"target_modules": ["query", "value"], "bias": "all"}, "bias='all'"),
    ("bias lora_only", {"target_modules": ["query", "value"], "bias": "lora_only"}, "bias='lora_only'"),
    ("pooler targeted", {"target_modules": ["query", "dense"]}, "pooler"),
    ("body module saved whole", {"target_modules": ["query"], "modules_to_save": ["output.dense"]},
     "outside its classifier head"),
])
def test_what_the_engine_cannot_serve_per_row_is_refused_naming_it(case, lora, named, engine, tiny_bert, tmp_path):
    adapter = _peft_classifier(tiny_bert, tmp_path / case.replace(" ", "-"), **lora)
    with pytest.raises(UsageError) as err:
        engine.load(str(adapter))
    assert named in err.value.message and err.value.hint, err.value.message
    # Nothing of it stays resident, and the engine still serves others.
    assert str(adapter) not in {info.ref for info in engine.adapters() if info.state == "READY"}
    plain = _peft_classifier(tiny_bert, tmp_path / "after", target_modules=["query", "value"])
    assert len(engine.classify(["ok"], adapters=[str(plain)])) == 1


def test_an_unknown_slot_name_is_an_error_not_the_bare_base(engine):
    with pytest.raises(LookupError, match="no slot"), engine.lora.routed(["a_0000000000000000"]):
        pass


def test_over_http_the_refusal_is_a_4xx_that_names_the_feature(tiny_bert, tmp_path):
    import httpx

    from adapters.server import Limits, create_app, store_resolver
    from adapters_store import Store

    from support.server import serve_in_thread

    root = tmp_path / "store"
    with Store(root) as s:
        s.put(_peft_classifier(tiny_bert, tmp_path / "biased", target_modules=["query", "value"], bias="all"),
              "biased")
        s.put(_peft_classifier(tiny_bert, tmp_path / "plain", target_modules=["query", "value"]), "plain")
    engine = Engine(str(tiny_bert), quant="none", resolver=store_resolver(root))
    port, stop = serve_in_thread(create_app(engine, api_key=None, limits=Limits(), store_root=root))
    try:
        url = f"http://127.0.0.1:{port}/v1/classify"
        refused = httpx.post(url, json={"model": "biased@1", "input": TEXTS}, timeout=60)
        served = httpx.post(url, json={"model": "plain@1", "input": TEXTS}, timeout=60)
    finally:
        stop()
    assert 400 <= refused.status_code < 500, refused.text
    assert "bias='all'" in refused.json()["error"]["message"], refused.text
    assert served.status_code == 200 and len(served.json()["data"]) == len(TEXTS)
