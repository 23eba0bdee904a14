"""Options that many commands take, declared once so they read and behave the same everywhere
(the TUI's command uses them too). Commands bind them to the same parameter names: ``store`` and
``as_json``."""

from __future__ import annotations

import typer

StoreOpt = typer.Option(None, "--store", help="Store directory (default: $ADAPTERS_HOME, else the user data dir).",
                        show_default=False)
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of text.")
