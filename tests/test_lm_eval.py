"""lm-evaluation-harness, unchanged, against ``adapters serve``: its ``local-completions`` model (with
the server's remote tokenizer) scores a loglikelihood task and a generate_until task, written as
task YAML over a local JSONL file, for a LoRA adapter, a prefix adapter and the bare base, and gets
what lm-eval's own ``hf`` model with ``peft=`` gets on the same base and adapter: the same scores,
every loglikelihood within 1e-4, the same generations (CPU, fp32)."""

import json

import pytest

from adapters_store import Store

from support.server import API_KEY, shared_server

ROWS = [
    {"question": "The sky on a clear day is", "choices": ["blue", "green", "red"], "label": 0},
    {"question": "Two plus two is", "choices": ["three", "four", "five"], "label": 1},
    {"question": "Water freezes at zero degrees", "choices": ["Celsius", "Kelvin", "Newton"], "label": 0},
    {"question": "The opposite of hot is", "choices": ["warm", "cold", "loud"], "label": 1},
    {"question": "A young cat is called a", "choices": ["puppy", "kitten", "calf"], "label": 1},
]
TASKS = {
    "local_mc": {"output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_choice": "{{choices}}",
                 "doc_to_target": "label", "metric_list": [{"metric": "acc"}]},
    "local_gen": {"output_type": "generate_until", "doc_to_text": "{{question}}",
                  "doc_to_target": "{{choices[label]}}",
                  "generation_kwargs": {"until": ["\n"], "max_gen_toks": 6, "do_sample": False},
                  "metric_list": [{"metric": "exact_match"}]},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv):
    return shared_server(tmp_path_factory, tiny_llama, tiny_bert, chat_jsonl, sentiment_csv)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    import yaml

    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    data = folder / "questions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for name, spec in TASKS.items():
        task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test", **spec}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return folder


def _evaluate(model: str, model_args: str, tasks) -> tuple[dict, list, list]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=list(TASKS),
                                  task_manager=TaskManager(include_path=str(tasks)), log_samples=True,
                                  batch_size=1)
    scores = {t: {k: v for k, v in r.items() if isinstance(v, (int, float))} for t, r in out["results"].items()}
    logliks = [[float(r[0][0]) for r in s["resps"]] for s in out["samples"]["local_mc"]]
    generations = [s["resps"][0][0] for s in out["samples"]["local_gen"]]
    return scores, logliks, generations


@pytest.mark.timeout(600)
@pytest.mark.parametrize("role", ["A", "P", "base"])
def test_local_completions_through_the_server_equals_hf_with_peft(role, served, tasks, tiny_llama, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # what local-completions sends as its bearer token
    if role == "base":
        model, peft = served.base_name, ""
    else:
        model = served.refs[role]
        with Store(served.root) as s:
            peft = f",peft={s.resolve(model).path}"
    remote = _evaluate("local-completions", f"base_url={served.url}/v1/completions,model={model},"
                       f"tokenizer_backend=remote,auth_token={API_KEY},num_concurrent=1,max_retries=1", tasks)
    local = _evaluate("hf", f"pretrained={tiny_llama}{peft},dtype=float32,device=cpu", tasks)
    assert remote[0] == local[0]
    for ours, theirs in zip(remote[1], local[1]):
        assert all(abs(a - b) < 1e-4 for a, b in zip(ours, theirs)), (ours, theirs)
    assert remote[2] == local[2] and any(remote[2])
    if peft:  # not vacuous: the adapter moves the scores away from the bare base's
        bare = _evaluate("hf", f"pretrained={tiny_llama},dtype=float32,device=cpu", tasks)
        assert max(abs(a - b) for ours, base in zip(remote[1], bare[1]) for a, b in zip(ours, base)) > 1e-3
