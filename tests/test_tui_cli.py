"""``adapters tui`` as a user starts it: without a terminal it refuses at once, with one line on
stderr and exit status 2, instead of waiting forever for keys that never come."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

ADAPTERS = Path(sys.executable).parent / "adapters"  # the console script of this environment


def _run(stdin) -> subprocess.CompletedProcess:
    # The timeout is the test: a TUI that waits for a terminal never returns by itself.
    return subprocess.run([str(ADAPTERS), "tui"], stdin=stdin, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(90)
def test_tui_without_a_terminal_refuses_with_one_line():
    with open(os.devnull) as devnull:
        done = _run(devnull)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: adapters tui needs a terminal"), done.stderr
    assert "stdin and stdout" in lines[0]


@pytest.mark.timeout(90)
def test_tui_with_its_output_in_a_pipe_refuses_too():
    """Keys from a terminal but the screen into a pipe (``adapters tui | cat``)."""
    leader, follower = pty.openpty()
    try:
        done = _run(follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "(stdout is not one)" in lines[0], done.stderr


def test_outside_the_repository_the_train_tab_gets_the_shipped_example_configs(tmp_path, monkeypatch):
    from adapters_tui.app import default_configs_dir

    monkeypatch.chdir(tmp_path)  # no ./configs here
    shipped = default_configs_dir()
    assert shipped is not None and (shipped / "rt-minilm-lora.yaml").is_file()
    (tmp_path / "configs").mkdir()
    assert default_configs_dir() == tmp_path / "configs"  # a ./configs of the user's comes first
