"""What the store commands print, read as a person reads it: ``adapters list`` in a pipe and on an
80-column terminal, ``show`` as a short summary, ``diff`` naming exactly what changed. Through the
real ``adapters`` entry point, on a terminal made with a pseudo-terminal of a chosen size."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from adapters_store import Store
from adapters_store.testing import make_adapter_dir

ADAPTERS = str(Path(sys.executable).with_name("adapters"))
METRICS = {"best_step": 13, "steps": 13, "dev": {"accuracy": 0.7512345678, "f1_macro": 0.74},
           "test": {"accuracy": 0.75, "f1_macro": 0.7481234}}
LONG_BASE = "/very/long/path/to/a/local/base/model/directory/that/does/not/fit/in/eighty/columns"


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("ADAPTERS_HOME", str(home))
    s = Store(home)
    for i, (name, metrics, epochs) in enumerate([("rt-lora", METRICS, 1),
                                                 ("chat-lora", {"test": {"perplexity": 11.17}}, 2),
                                                 ("rt-lora", {"test": {"f1_macro": 0.7555}}, 3)]):
        src = make_adapter_dir(tmp_path / "src" / str(i), payload=str(i).encode() * 50)
        s.put(src, name, metrics=metrics,
              lineage={"base": LONG_BASE, "training": {"training": {"epochs": epochs, "learning_rate": 2e-3,
                                                                  "history": list(range(30)) + [epochs]}}})
    return home


def piped(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ADAPTERS, *args], capture_output=True, text=True, timeout=120)


def on_terminal(*args: str, columns: int = 80) -> str:
    """stdout of the command on a pseudo-terminal ``columns`` wide."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([ADAPTERS, *args], stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the follower side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_list_in_a_pipe_prints_every_column_whole(home):
    out = piped("list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["REF", "METRIC", "ALIASES", "CREATED", "METHOD", "TASK", "BASE", "SIZE", "DIGEST"]
    row = next(line for line in lines if line.startswith("rt-lora@1 "))
    # The headline metric, not the first numbers stored (best_step, steps); nothing cut with "…".
    assert "f1_macro 0.748 (test)" in row and "best_step" not in row
    assert LONG_BASE in row and "…" not in out.stdout and "─" not in out.stdout
    assert "latest" in next(line for line in lines if line.startswith("rt-lora@2 "))


def test_list_on_an_80_column_terminal_drops_columns_instead_of_blanking_them(home):
    out = on_terminal("list", columns=80)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].startswith("3 version(s) in ")
    header = lines[1].split()
    assert header[:2] == ["REF", "METRIC"] and "BASE" not in header  # the long base does not fit
    assert all(len(line) <= 80 for line in lines[1:]), lines
    row = next(line for line in lines if line.startswith("rt-lora@1 "))
    assert "f1_macro 0.748 (test)" in row and "…" not in out


def test_list_on_a_wide_terminal_shows_everything(home):
    out = on_terminal("list", columns=250)
    assert "DIGEST" in out and LONG_BASE in out


@pytest.mark.parametrize("option, value, known", [("--method", "bogus", "lora, prefix"),
                                                  ("--task", "classifcation", "causal-lm, classification")])
def test_list_filters_are_checked(home, option, value, known):
    out = piped("list", option, value)
    assert out.returncode == 2 and f"unknown {option[2:]} '{value}'" in out.stderr and known in out.stderr


def test_show_is_a_short_summary(home):
    out = piped("show", "rt-lora@1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) < 20, out.stdout
    assert any(line.split()[:2] == ["test", "metrics"] and "f1_macro 0.7481" in line for line in lines)
    assert "0.7512345678" not in out.stdout and "accuracy 0.7512" in out.stdout
    assert "--json" in lines[-1]
    assert any(line.split()[:1] == ["training"] and "epochs=1" in line and "learning_rate=0.002" in line
               for line in lines), out.stdout
    full = json.loads(piped("show", "rt-lora@1", "--json").stdout)
    assert full["metrics"] == METRICS


def test_diff_names_what_changed_in_full(home):
    out = piped("diff", "rt-lora@1", "rt-lora@2")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert re.search(r"training\.training\.epochs +1  ->  3\n", text), text
    # A long list that differs only at its end is shown whole, so the difference is visible.
    history = next(line for line in text.splitlines() if "training.training.history" in line)
    assert "29, 1]" in history and "29, 3]" in history
    assert re.search(r"test\.f1_macro +0\.748123  ->  0\.7555\n", text), text
    assert "dev.accuracy" in text and "(not in rt-lora@2)" in text
