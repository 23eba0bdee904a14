"""``python -m adapters_tui``: the terminal UI (the same as ``adapters tui``)."""

from adapters_tui.cli import main

main()
