"""Adapters written by plain peft with options this project never uses: the engine either gives
what peft gives, row for row, or refuses at load naming the feature. Never a silently other answer.

The matrix: every case is an adapter peft itself builds and saves (``get_peft_model`` with the
case's config, its trainable weights perturbed so that every saved part moves the output, then
``save_pretrained``). A served case is compared with ``PeftModel.from_pretrained`` on the same base
and inputs, in a batch that mixes it with other rows: for causal LMs every prompt token's and every
generated token's log-probability (echo + logprobs) and the greedy tokens themselves, for
classifiers the label probabilities. A refused case raises a UsageError that names the feature and
has a hint, leaves nothing resident, and the engine serves its other adapters as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from adapters.errors import UsageError
from adapters.runtime import Engine
from adapters.runtime.requests import GenerationRequest

TEXTS = ["a fine film", "dull and slow", "I laughed a lot", "no"]
PROMPTS = ["the cat sat on the mat", "hello there, how are you today"]
NEW_TOKENS = 3
ATOL_LOGPROB = 1e-4
ATOL_PROB = 2e-6


@dataclass(frozen=True)
class Case:
    """One adapter as plain peft makes it: ``kind`` is peft's config class, ``options`` its
    arguments (LoRA rank 4 and alpha 8 unless given); ``save`` goes to ``save_pretrained``;
    ``convert`` saves a PiSSA-style adapter converted to plain LoRA, the way peft documents it."""

    kind: str = "LoraConfig"
    options: dict = field(default_factory=dict)
    save: dict = field(default_factory=dict)
    convert: bool = False


def lora(**options) -> Case:
    return Case("LoraConfig", {"r": 4, "lora_alpha": 8, **options})


def prompt_learning(kind: str, **options) -> Case:
    return Case(kind, options)


def _perturb(model) -> None:
    """Noise on every trainable tensor (LoRA A and B, heads, prefixes and their projection): an
    initialisation that leaves the output alone (B = 0) would let a wrong scaling pass unseen.
    The tiny random bodies pool to nearly the same vector for every text, so classifier heads get
    ten times the noise: a 1% error in a prefix then moves a probability by about 3e-5, not 3e-6."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                head = ".classifier." in name or ".score." in name
                param.add_(torch.randn_like(param) * (3.0 if head else 0.3))


def build(case: Case, base: Path, out: Path, task: str) -> Path:
    """Save ``case`` for ``base`` with plain peft into ``out`` (task: CAUSAL_LM or SEQ_CLS)."""
    import peft
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(1)
    if task == "CAUSAL_LM":
        model = AutoModelForCausalLM.from_pretrained(base)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    model = peft.get_peft_model(model, getattr(peft, case.kind)(task_type=task, **case.options))
    save = dict(case.save)
    if case.convert:  # peft's recipe: save the initial adapter as plain LoRA before training
        initial = out.with_name(out.name + "-init")
        config = model.peft_config["default"]
        init, config.init_lora_weights = config.init_lora_weights, True
        model.save_pretrained(initial)
        config.init_lora_weights = init
        save["path_initial_model_for_weight_conversion"] = str(initial)
    _perturb(model)
    model.save_pretrained(out, **save)
    return out


def _peft_model(base: Path, adapter: Path | None, task: str):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == "CAUSAL_LM":
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2, dtype=torch.float32)
    return (PeftModel.from_pretrained(model, str(adapter)) if adapter is not None else model).eval()


def peft_scores(base: Path, adapter: Path | None, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """From one plain peft forward over ``ids``: log p(ids[j] | ids[:j]) for j >= 1, and the
    greedy choice after each position."""
    with torch.no_grad():
        logits = _peft_model(base, adapter, "CAUSAL_LM")(input_ids=torch.tensor([ids])).logits[0].float()
    scores = torch.log_softmax(logits, -1)
    return scores[:-1].gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1), scores.argmax(-1)


def peft_probabilities(base: Path, adapter: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    with torch.no_grad():
        batch = tok(texts, padding=True, return_tensors="pt")
        return torch.softmax(_peft_model(base, adapter, "SEQ_CLS")(**batch).logits.float(), -1)


def probabilities(rows: list[dict]) -> torch.Tensor:
    return torch.tensor([[row["probabilities"][k] for k in sorted(row["probabilities"])] for row in rows])


@pytest.fixture(scope="module")
def bert_engine(tiny_bert):
    return Engine(str(tiny_bert), quant="none")


@pytest.fixture(scope="module")
def llama_engine(tiny_llama):
    """One decoder engine for both causal LM and classifier adapters (a classifier head per adapter)."""
    return Engine(str(tiny_llama), quant="none", device="cpu")


@pytest.fixture(scope="module")
def plain(tiny_bert, tiny_llama, tmp_path_factory) -> dict[str, Path]:
    """A plain LoRA adapter per family, served beside every case."""
    root = tmp_path_factory.mktemp("plain")
    target = {"target_modules": ["q_proj", "v_proj"]}
    return {"bert": build(lora(target_modules=["query", "value"]), tiny_bert, root / "bert", "SEQ_CLS"),
            "llama-cls": build(lora(**target), tiny_llama, root / "llama-cls", "SEQ_CLS"),
            "causal": build(lora(**target), tiny_llama, root / "causal", "CAUSAL_LM")}


# ---- causal LM -----------------------------------------------------------------------------------

CAUSAL_SERVED = {
    "plain, dropout (off in eval)": lora(target_modules=["q_proj", "v_proj"], lora_dropout=0.3),
    "rank_pattern and alpha_pattern, regex keys": lora(
        target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern={"v_proj": 2, r"layers\.1\.self_attn\.q_proj": 6},
        alpha_pattern={"down_proj": 3, r"^model\.layers\.0\..*q_proj": 20}),
    "use_rslora, mixed ranks": lora(target_modules=["q_proj", "o_proj"], use_rslora=True, rank_pattern={"o_proj": 7},
                                    alpha_pattern={"o_proj": 5}),
    "target_modules as a regex": lora(target_modules=r".*\.1\.(self_attn\.(k|o)_proj|mlp\.up_proj)"),
    "layers_to_transform": lora(target_modules=["q_proj", "v_proj"], layers_to_transform=[1]),
    "exclude_modules": lora(target_modules=["q_proj", "v_proj"], exclude_modules=r".*layers\.0\.self_attn\.v_proj"),
    "all-linear": lora(target_modules="all-linear"),
    "lm_head targeted, saved without a copy of it": Case(
        "LoraConfig", {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "lm_head"]},
        save={"save_embedding_layers": False}),
    "target_parameters on linear weights": lora(target_modules=[], target_parameters=["q_proj.weight",
                                                                                       "down_proj.weight"]),
    "init gaussian": lora(target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian"),
    "init orthogonal": lora(target_modules=["q_proj", "v_proj"], init_lora_weights="orthogonal"),
    "init False": lora(target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    "init eva": lora(target_modules=["q_proj", "v_proj"], init_lora_weights="eva"),
    "MiCA (B frozen in training, plain forward)": lora(target_modules=["q_proj"], init_lora_weights="mica"),
    "PiSSA converted at save": Case("LoraConfig", {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                                                   "init_lora_weights": "pissa"}, convert=True),
    "prefix tuning": prompt_learning("PrefixTuningConfig", num_virtual_tokens=4),
    "prefix tuning, prefix_projection": prompt_learning("PrefixTuningConfig", num_virtual_tokens=5,
                                                        prefix_projection=True, encoder_hidden_size=16),
}


@pytest.mark.parametrize("name", CAUSAL_SERVED)
def test_causal_lm_adapter_scores_and_greedy_tokens_equal_plain_peft(name, llama_engine, tiny_llama, tmp_path):
    """Prompt and generated log-probabilities and greedy tokens of each row equal plain peft's, in
    a batch with a bare-base row between the adapter's rows."""
    adapter = build(CAUSAL_SERVED[name], tiny_llama, tmp_path / "adapter", "CAUSAL_LM")
    tok = llama_engine.tokenizer
    rows = [(PROMPTS[0], adapter), (PROMPTS[1], None), (PROMPTS[1], adapter)]
    requests = [GenerationRequest(p, str(a) if a else None, max_new_tokens=NEW_TOKENS, raw=True, echo=True,
                                  logprobs=True, prompt_ids=tok(p, add_special_tokens=False)["input_ids"])
                for p, a in rows]
    try:
        results = llama_engine.run(requests)
    finally:
        llama_engine.unload(str(adapter))
    moved = 0.0
    for (_, row_adapter), request, result in zip(rows, requests, results):
        ids = list(request.prompt_ids) + result.scored_ids
        want, greedy = peft_scores(tiny_llama, row_adapter, ids)
        got = torch.tensor([lp for _, lp, _ in result.prompt_logprobs[1:]] + result.logprobs)
        assert torch.allclose(got, want, atol=ATOL_LOGPROB), (name, row_adapter, got, want)
        assert result.scored_ids == greedy[len(request.prompt_ids) - 1:-1].tolist(), (name, row_adapter)
        if row_adapter is not None:
            moved = max(moved, float((want - peft_scores(tiny_llama, None, ids)[0]).abs().max()))
    assert moved > 1e-2, f"{name}: the adapter hardly moves the scores, so this comparison proves little"


CAUSAL_REFUSED = {
    "DoRA": (lora(target_modules=["q_proj", "v_proj"], use_dora=True), "DoRA"),
    "aLoRA": (lora(target_modules=["q_proj", "v_proj"], alora_invocation_tokens=[5, 6]), "aLoRA"),
    "lora_bias": (lora(target_modules=["q_proj", "v_proj"], lora_bias=True), "lora_bias"),
    "trainable tokens": (lora(target_modules=["q_proj"], trainable_token_indices=[1, 2, 3]), "trainable tokens"),
    "LoRA on embed_tokens": (lora(target_modules=["embed_tokens", "q_proj"]), "embeddings (model.embed_tokens"),
    "lm_head targeted, saved with its copy": (lora(target_modules=["q_proj", "lm_head"]),
                                              "copy of a base layer (lm_head"),
    "lm_head in modules_to_save": (lora(target_modules=["q_proj"], modules_to_save=["lm_head"]), "modules_to_save"),
    "layer_replication": (lora(target_modules=["q_proj"], layer_replication=[[0, 2], [1, 2]]), "layer_replication"),
    "PiSSA saved unconverted": (lora(target_modules=["q_proj"], init_lora_weights="pissa"), "PiSSA"),
    "PiSSA fast SVD saved unconverted": (lora(target_modules=["q_proj"], init_lora_weights="pissa_niter_2"),
                                         "PiSSA"),
    "OLoRA saved unconverted": (lora(target_modules=["q_proj"], init_lora_weights="olora"), "OLoRA"),
    "prompt tuning": (prompt_learning("PromptTuningConfig", num_virtual_tokens=4), "PROMPT_TUNING"),
    "p-tuning": (prompt_learning("PromptEncoderConfig", num_virtual_tokens=4, encoder_hidden_size=16), "P_TUNING"),
}


def _assert_refused(engine, adapter: Path, named: str) -> None:
    with pytest.raises(UsageError) as err:
        engine.load(str(adapter))
    assert named in err.value.message and err.value.hint, err.value.message
    assert "another base" not in err.value.hint, err.value.hint  # a refusal, not a wrong base
    states = {info.state for info in engine.adapters() if info.ref == str(adapter)}
    assert "READY" not in states, states


@pytest.mark.parametrize("name", CAUSAL_REFUSED)
def test_causal_lm_adapter_the_engine_cannot_serve_is_refused_naming_the_feature(name, llama_engine, tiny_llama, plain,
                                                                                 tmp_path):
    """A UsageError naming the feature, with a hint; nothing resident; the other adapters answer as before."""
    case, named = CAUSAL_REFUSED[name]
    adapter = build(case, tiny_llama, tmp_path / "adapter", "CAUSAL_LM")
    served = [str(plain["causal"]), None]
    before = llama_engine.generate(PROMPTS, served, max_new_tokens=NEW_TOKENS, raw=True, logprobs=True)
    _assert_refused(llama_engine, adapter, named)
    after = llama_engine.generate(PROMPTS, served, max_new_tokens=NEW_TOKENS, raw=True, logprobs=True)
    assert [(r.token_ids, r.logprobs) for r in after] == [(r.token_ids, r.logprobs) for r in before]


def test_loftq_is_refused_for_the_base_peft_rewrites(llama_engine, tiny_llama, tmp_path):
    """LoftQ replaces the base's weights when peft loads the adapter (peft builds LoftQ adapters on
    CUDA only, so the config of a plain adapter is marked LoftQ here)."""
    import json

    adapter = build(lora(target_modules=["q_proj"]), tiny_llama, tmp_path / "loftq", "CAUSAL_LM")
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "init_lora_weights": "loftq", "loftq_config": {"loftq_bits": 4}}))
    _assert_refused(llama_engine, adapter, "LoftQ")


# ---- classifiers ---------------------------------------------------------------------------------

CLASSIFIER_SERVED = {
    "bert: plain": ("bert", lora(target_modules=["query", "value"])),
    "bert: rank_pattern, alpha_pattern (regex), use_rslora": ("bert", lora(
        target_modules=["query", "value", "key"], rank_pattern={"value": 2},
        alpha_pattern={r"layer\.1\.attention\.self\.query": 3}, use_rslora=True)),
    "bert: target_modules as a regex": ("bert", lora(target_modules=r".*\.1\.attention\.(self\.key|output\.dense)")),
    "bert: layers_to_transform": ("bert", lora(target_modules=["query", "value"], layers_to_transform=[0])),
    "bert: exclude_modules": ("bert", lora(target_modules=["query", "value"], exclude_modules=r".*layer\.1\..*value")),
    "bert: init gaussian": ("bert", lora(target_modules=["query", "value"], init_lora_weights="gaussian")),
    # The head replays its own pooler: LoRA on the pooler is merged into that copy.
    "bert: pooler targeted": ("bert", lora(target_modules=["query", "dense"])),
    "bert: all-linear, pooler rank and alpha patterns": ("bert", lora(
        target_modules="all-linear", rank_pattern={"pooler.dense": 2}, alpha_pattern={r"bert\.pooler\..*": 11})),
    "bert: prefix tuning, prefix_projection": ("bert", prompt_learning(
        "PrefixTuningConfig", num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=16)),
    "llama: plain": ("llama", lora(target_modules=["q_proj", "v_proj"])),
    "llama: all-linear": ("llama", lora(target_modules="all-linear")),
    "llama: rank_pattern, use_rslora": ("llama", lora(target_modules=["q_proj", "v_proj", "up_proj"], use_rslora=True,
                                                      rank_pattern={"up_proj": 6}, alpha_pattern={"v_proj": 2})),
    "llama: score targeted (peft saves it whole)": ("llama", lora(target_modules=["q_proj", "score"])),
    "llama: prefix tuning, prefix_projection": ("llama", prompt_learning(
        "PrefixTuningConfig", num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=16)),
}


@pytest.mark.parametrize("name", CLASSIFIER_SERVED)
def test_classifier_adapter_probabilities_equal_plain_peft(name, bert_engine, llama_engine, tiny_bert, tiny_llama,
                                                           plain, tmp_path):
    """Each row's label probabilities equal plain peft's, the case's rows alternating with a plain
    LoRA classifier's in one batch."""
    family, case = CLASSIFIER_SERVED[name]
    engine, base, other = ((bert_engine, tiny_bert, plain["bert"]) if family == "bert"
                           else (llama_engine, tiny_llama, plain["llama-cls"]))
    adapter = build(case, base, tmp_path / "adapter", "SEQ_CLS")
    try:
        rows = engine.classify(TEXTS, adapters=[str(adapter), str(other)] * (len(TEXTS) // 2))
    finally:
        engine.unload(str(adapter))
    got = probabilities(rows)
    want = peft_probabilities(base, adapter, TEXTS)[0::2]
    assert torch.allclose(got[0::2], want, atol=ATOL_PROB), (name, got[0::2], want)
    assert torch.allclose(got[1::2], peft_probabilities(base, other, TEXTS)[1::2], atol=ATOL_PROB)


CLASSIFIER_REFUSED = {
    "bert: bias all": ("bert", lora(target_modules=["query", "value"], bias="all"), "bias='all'"),
    "bert: bias lora_only": ("bert", lora(target_modules=["query", "value"], bias="lora_only"), "bias='lora_only'"),
    "bert: body module saved whole": ("bert", lora(target_modules=["query"], modules_to_save=["output.dense"]),
                                      "outside its classifier head"),
    "bert: DoRA": ("bert", lora(target_modules=["query"], use_dora=True), "DoRA"),
    "bert: lora_bias": ("bert", lora(target_modules=["query"], lora_bias=True), "lora_bias"),
    "bert: LoRA on word_embeddings": ("bert", lora(target_modules=["word_embeddings", "query"]), "embeddings"),
    "bert: trainable tokens": ("bert", lora(target_modules=["query"], trainable_token_indices=[1, 2]),
                               "trainable tokens"),
    "bert: prompt tuning": ("bert", prompt_learning("PromptTuningConfig", num_virtual_tokens=3), "PROMPT_TUNING"),
    "llama: DoRA": ("llama", lora(target_modules=["q_proj"], use_dora=True), "DoRA"),
    "llama: LoRA on embed_tokens": ("llama", lora(target_modules=["embed_tokens", "q_proj"]), "embeddings"),
    "llama: trainable tokens": ("llama", lora(target_modules=["q_proj"], trainable_token_indices=[1, 2]),
                                "trainable tokens"),
    "llama: p-tuning": ("llama", prompt_learning("PromptEncoderConfig", num_virtual_tokens=3, encoder_hidden_size=16),
                        "P_TUNING"),
}


@pytest.mark.parametrize("name", CLASSIFIER_REFUSED)
def test_classifier_adapter_the_engine_cannot_serve_is_refused_naming_the_feature(name, bert_engine, llama_engine,
                                                                                  tiny_bert, tiny_llama, plain,
                                                                                  tmp_path):
    """A UsageError naming the feature, with a hint; nothing resident; the other adapters answer as before."""
    family, case, named = CLASSIFIER_REFUSED[name]
    engine, base, other = ((bert_engine, tiny_bert, plain["bert"]) if family == "bert"
                           else (llama_engine, tiny_llama, plain["llama-cls"]))
    adapter = build(case, base, tmp_path / "adapter", "SEQ_CLS")
    before = probabilities(engine.classify(TEXTS, adapter=str(other)))
    _assert_refused(engine, adapter, named)
    assert torch.equal(probabilities(engine.classify(TEXTS, adapter=str(other))), before)


def test_an_unknown_slot_name_is_an_error_not_the_bare_base(bert_engine):
    with pytest.raises(LookupError, match="no slot"), bert_engine.lora.routed(["a_0000000000000000"]):
        pass


# ---- over HTTP -----------------------------------------------------------------------------------

def _serve(engine_base: Path, root: Path, adapters: dict[str, Path]):
    from adapters.server import Limits, create_app, store_resolver
    from adapters_store import Store

    from support.server import serve_in_thread

    with Store(root) as s:
        for name, path in adapters.items():
            s.put(path, name)
    engine = Engine(str(engine_base), quant="none", device="cpu", resolver=store_resolver(root))
    return serve_in_thread(create_app(engine, api_key=None, limits=Limits(), store_root=root))


def test_over_http_a_refused_classifier_is_a_4xx_that_names_the_feature(tiny_bert, tmp_path):
    import httpx

    port, stop = _serve(tiny_bert, tmp_path / "store", {
        "biased": build(lora(target_modules=["query", "value"], bias="all"), tiny_bert, tmp_path / "biased",
                        "SEQ_CLS"),
        "plain": build(lora(target_modules=["query", "value"]), tiny_bert, tmp_path / "plain", "SEQ_CLS")})
    try:
        url = f"http://127.0.0.1:{port}/v1/classify"
        refused = httpx.post(url, json={"model": "biased@1", "input": TEXTS}, timeout=60)
        served = httpx.post(url, json={"model": "plain@1", "input": TEXTS}, timeout=60)
    finally:
        stop()
    assert 400 <= refused.status_code < 500, refused.text
    assert "bias='all'" in refused.json()["error"]["message"], refused.text
    assert served.status_code == 200 and len(served.json()["data"]) == len(TEXTS)


def test_over_http_refused_causal_lm_adapters_are_4xx_that_name_the_feature(tiny_llama, tmp_path):
    """LoRA (DoRA) and prompt-learning (prompt tuning) families: a 4xx naming the feature; a
    plain adapter on the same server still completes."""
    import httpx

    port, stop = _serve(tiny_llama, tmp_path / "store", {
        "dora": build(lora(target_modules=["q_proj"], use_dora=True), tiny_llama, tmp_path / "dora", "CAUSAL_LM"),
        "prompt": build(prompt_learning("PromptTuningConfig", num_virtual_tokens=4), tiny_llama, tmp_path / "prompt",
                        "CAUSAL_LM"),
        "plain": build(lora(target_modules=["q_proj"]), tiny_llama, tmp_path / "plain", "CAUSAL_LM")})
    try:
        url = f"http://127.0.0.1:{port}/v1/completions"
        answers = {name: httpx.post(url, json={"model": f"{name}@1", "prompt": PROMPTS[0], "max_tokens": 2},
                                    timeout=60) for name in ("dora", "prompt", "plain")}
    finally:
        stop()
    for name, named in (("dora", "DoRA"), ("prompt", "PROMPT_TUNING")):
        assert 400 <= answers[name].status_code < 500, answers[name].text
        assert named in answers[name].json()["error"]["message"], answers[name].text
    assert answers["plain"].status_code == 200, answers["plain"].text
