"""Usage errors of the real ``adapters`` entry point, as a user meets them: one line saying what
is wrong, one hint, exit 2, never a traceback; help, ``-h`` and ``--version`` work everywhere."""

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ADAPTERS = [str(Path(sys.executable).with_name("adapters"))]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([*ADAPTERS, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


@pytest.mark.parametrize("args, message", [
    (["lst"], "No such command 'lst'. Did you mean 'list'?"),
    (["import", "somewhere"], "Missing option '--name'"),
    (["list", "--json", "true"], "unexpected extra argument"),
    (["list", "--bogus"], "No such option: --bogus"),
    (["train"], "Missing argument"),
    (["show"], "Missing argument"),
    (["serve", "--port", "eighty"], "Invalid value for '--port'"),
])
def test_usage_errors_are_one_line_a_hint_and_exit_2(args, message):
    out = run(*args)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert lines[1].startswith("hint: see 'adapters") and lines[1].endswith("--help'"), out.stderr
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"], ["train", "-h"], ["list", "--help"], ["serve", "-h"]])
def test_help_works_and_names_flags_plainly(args):
    out = run(*args)
    assert out.returncode == 0, out
    assert "Usage: adapters" in out.stdout
    # typer >= 0.27 labels every option with its Python type; ours names what to type.
    for label in ("<bool>", "<str>", "<list[str]>", "<int>"):
        assert label not in out.stdout, (label, out.stdout)


def test_help_shows_option_values_by_name():
    out = run("list", "--help")
    assert re.search(r"--name\s+NAME\s+Only this adapter name", out.stdout), out.stdout
    assert re.search(r"--json\s+Print JSON", out.stdout), out.stdout  # a flag takes no value


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"adapters {version('adapter-manager')}", out


@pytest.mark.parametrize("source, base, message", [
    ("missing.csv", "minilm-l6", "data file not found: {folder}/missing.csv"),
    ("builtin:rotten-tomatoes", "minilm-l7", "unknown base model 'minilm-l7'; did you mean 'minilm-l6'?"),
])
def test_train_reports_a_missing_file_or_base_before_loading_torch(tmp_path, source, base, message):
    """The mistakes found in milliseconds come first, not after seconds of imports."""
    config = tmp_path / "c.yaml"
    config.write_text(f"name: m\nbase: {base}\ndata: {{source: '{source}'}}\n")
    code = ("import sys\nfrom adapters.cli.main import main\n"
            f"code = main(['train', {str(config)!r}])\n"
            "print(code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ADAPTERS_HOME": str(tmp_path / "home")})
    assert out.stdout.split() == ["2", "False"], out
    assert out.stderr.splitlines()[0] == "error: " + message.format(folder=tmp_path), out.stderr
    assert not (tmp_path / "home").exists()


def test_a_folder_called_store_or_tui_in_the_current_directory_shadows_nothing(tmp_path):
    """./store is the natural $ADAPTERS_HOME; neither it nor a ./tui folder may be imported in
    place of the project's packages (python -m puts the current directory first on sys.path)."""
    (tmp_path / "store").mkdir()
    (tmp_path / "tui").mkdir()
    (tmp_path / "tui" / "notes.txt").write_text("mine")
    env = {**os.environ, "ADAPTERS_HOME": "./store"}
    listed = subprocess.run([sys.executable, "-m", "adapters", "list"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "no adapters stored yet" in listed.stdout, listed
    api = subprocess.run([sys.executable, "-c", "from adapters_store import Store; import adapters_tui.cli; "
                          "print(len(Store('./store').list()))"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert api.returncode == 0 and api.stdout.strip() == "0", api
