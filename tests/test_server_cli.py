"""`adapters serve`: config file and flags, refusals before anything loads, and one real server
process started from a config (port 0, API key from ADAPTERS_API_KEY) answering over HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from adapters.cli.serve import build, load_serve_config, register
from adapters.errors import ConfigError, UsageError

from support.server import CHAT, train_into_store

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]
LAUNCH = ("import sys, typer\nfrom adapters.cli.serve import register\napp = typer.Typer()\n"
          "app.callback()(lambda: None)\nregister(app)\napp(sys.argv[1:])\n")


def test_register_adds_serve_with_its_options():
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    for flag in ("--base", "--adapter", "--quant", "--host", "--port", "--api-key", "--config", "--store",
                 "--max-adapters", "--max-bytes", "ADAPTERS_API_KEY"):
        assert flag in out.output


def test_config_file_then_flags():
    cfg = load_serve_config(REPO / "configs" / "serve-smollm2.yaml", {"port": 9001, "max_tokens": 64, "adapters": [],
                                                                     "max_bytes": 2**20})
    assert cfg.base == "smollm2-135m" and cfg.quant == "4bit" and cfg.host == "127.0.0.1"
    assert cfg.max_bytes == 2**20 and cfg.max_adapters == 64
    assert cfg.port == 9001 and cfg.limits.max_tokens == 64 and cfg.limits.max_batch_size == 16
    assert cfg.adapters == ["chat-smollm2-lora", "topics-smollm2-prefix"]  # an empty --adapter list keeps them
    assert load_serve_config(None, {"base": "x"}).host == "127.0.0.1"  # binds localhost unless told otherwise


def test_bad_configs_are_refused_with_hints(tmp_path):
    with pytest.raises(ConfigError, match="no base"):
        load_serve_config(None, {})
    bad = tmp_path / "serve.yaml"
    bad.write_text("base: x\nlimts: {max_tokens: 3}\n")
    with pytest.raises(ConfigError, match="limts") as exc:
        load_serve_config(bad, {})
    assert exc.value.hint
    with pytest.raises(ConfigError, match="quant"):
        load_serve_config(None, {"base": "x", "quant": "3bit"})
    with pytest.raises(UsageError, match="looks like a path"):
        build(load_serve_config(None, {"base": "x", "adapters": ["./out/adapter"]}))


def test_serve_process_from_a_config(tmp_path, tiny_llama, chat_jsonl):
    root = tmp_path / "store"
    ref = train_into_store(root, "chat-a", tiny_llama, chat_jsonl, 1, task="causal-lm",
                           data={"source": str(chat_jsonl), **CHAT})
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "base": str(tiny_llama), "quant": "none", "device": "cpu", "adapters": [ref], "port": 0,
        "store": str(root), "served_name": "tiny", "log_level": "info", "limits": {"max_tokens": 8}}))
    env = {**os.environ, "ADAPTERS_API_KEY": "sk-cli", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "serve", "--config", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, log, deadline = None, [], time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            log.append(line)
            m = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "".join(log)
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        h = {"Authorization": "Bearer sk-cli"}
        ids = [m["id"] for m in httpx.get(f"{url}/v1/models", headers=h).json()["data"]]
        assert ids == ["tiny", ref]  # the preloaded adapter is resident
        r = httpx.post(f"{url}/v1/completions", json={"model": ref, "prompt": "hi", "max_tokens": 2}, headers=h)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_serve_refuses_a_bad_ref_and_a_busy_port_before_loading_anything(tmp_path):
    """The checks that take milliseconds come before the seconds of torch and the base: a
    missing ref or a port in use is the first thing the user sees, exit 2, one line and a hint."""
    import socket
    import subprocess
    import sys

    code = ("import sys\n"
            "from adapters.cli.serve import check_before_loading, load_serve_config\n"
            "from adapters.errors import UsageError\n"
            "try:\n"
            "    check_before_loading(load_serve_config(None, {'base': 'minilm-l6', 'adapters': sys.argv[1:2],"
            " 'port': int(sys.argv[2])}))\n"
            "except UsageError as e:\n"
            "    print(e.message)\n"
            "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')\n")
    env = {**os.environ, "ADAPTERS_HOME": str(tmp_path / "home")}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-c", code, "nope@1", str(port)], capture_output=True, text=True,
                             env=env, timeout=120)
        assert out.stdout.splitlines() == ["cannot preload adapter 'nope@1': no adapter store at "
                                           f"{tmp_path / 'home'}", "torch not loaded"], out
        cli = subprocess.run([str(Path(sys.executable).with_name("adapters")), "serve", "--base", "minilm-l6",
                              "--port", str(port)], capture_output=True, text=True, env=env, timeout=120)
    assert cli.returncode == 2, cli
    assert cli.stderr.splitlines()[0] == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
