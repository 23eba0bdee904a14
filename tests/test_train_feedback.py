"""The Python API is not silent: a progress bar on a terminal (none in a pipe or a log file), and
a callback that gets every run-log event as it happens."""

import os
import pty
import subprocess
import sys

import adapters
from adapters.training.runs import read_events

from support.config import tiny_config


def test_callback_gets_every_logged_event_as_it_happens(tiny_bert, sentiment_csv, capsys):
    seen = []

    def callback(event: dict) -> None:
        # Called as each event is written: the log holds it already, and nothing after it.
        logged = read_events(result_dir[0] / "events.jsonl") if result_dir else []
        seen.append((event, logged[-1] if logged else None))

    result_dir = []
    cfg = tiny_config(tiny_bert, sentiment_csv, training={"epochs": 1, "log_every": 1, "eval_every": 2})
    from adapters.training.runs import runs_dir

    result_dir.append(runs_dir() / "20250101-000000-tiny-abcdef")
    result = adapters.train(cfg, run_dir=result_dir[0], callback=callback, store=False)
    events = read_events(result.run_dir / "events.jsonl")
    assert [e for e, _ in seen] == events
    assert all(event == last for event, last in seen)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "step" in kinds and "eval" in kinds
    # Not a terminal (pytest captures output): no progress bar.
    assert "train" not in capsys.readouterr().out


def test_progress_bar_on_a_terminal_only(tiny_bert, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert, sentiment_csv, training={"epochs": 1, "log_every": 1})
    code = f"import adapters; adapters.train({cfg!r}, store=False)"
    env = {**os.environ, "ADAPTERS_HOME": str(tmp_path / "home"), "TERM": "xterm"}
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=follower, stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=600) == 0
    os.close(leader)
    assert "train" in b"".join(chunks).decode() and "eta" in b"".join(chunks).decode()
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert piped.returncode == 0 and "eta" not in piped.stdout
