"""``python -m tui``: the terminal UI (the same as ``adapters tui``)."""

from tui.cli import main

main()
