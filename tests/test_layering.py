"""The layering the README promises, read from the source: store/ imports neither the core, the
TUI nor torch; the core (adapters/) never imports the TUI, which adds its command through the
``adapters.commands`` entry point instead."""

import ast
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_modules(folder: str) -> dict[str, set[str]]:
    """file -> every top-level module its import statements name (wherever they are)."""
    out = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = names
    return out


@pytest.mark.parametrize("folder, forbidden", [
    ("store", {"adapters", "adapters_tui", "torch", "transformers", "peft"}),
    ("adapters", {"adapters_tui"}),
])
def test_no_import_points_up_the_layers(folder, forbidden):
    wrong = {f: sorted(names & forbidden) for f, names in imported_modules(folder).items() if names & forbidden}
    assert not wrong, wrong


def test_the_tui_command_comes_through_the_entry_point():
    from adapters.cli.main import COMMAND_ENTRY_POINTS, _register_commands, app

    assert [e.value for e in entry_points(group=COMMAND_ENTRY_POINTS)] == ["adapters_tui.cli:register"]
    _register_commands()
    assert "tui" in {c.name for c in app.registered_commands}
