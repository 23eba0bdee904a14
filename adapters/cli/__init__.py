"""The ``adapters`` command: one module per group of commands, registered on the typer app in
``main``. Each imports its heavy libraries inside the command, so ``adapters --help`` stays light."""
