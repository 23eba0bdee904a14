"""``adapters tui``: the command that opens the terminal UI. Imports only typer (and the core's
shared options) here; the app loads when the command runs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from adapters.cli.options import StoreOpt


def tui(
    store: Path | None = StoreOpt,
    configs: Path | None = typer.Option(None, "--configs", help="Directory of training configs "
                                           "(default: ./configs)."),
    connect: str | None = typer.Option(None, "--connect", help="Connect the playground to a running "
                                          "`adapters serve`, e.g. http://127.0.0.1:8000."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="ADAPTERS_API_KEY",
                                          help="API key of that server."),
    tab: str = typer.Option("store", "--tab", help="Tab to open: store, train or playground."),
) -> None:
    """Open the terminal UI: browse the store, launch and watch training, try adapters side by side."""
    # Without a terminal Textual cannot read keys or size its screen, and it would wait forever.
    redirected = [name for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout))
                  if stream is None or not stream.isatty()]
    if redirected:
        verb = "is" if len(redirected) == 1 else "are"
        typer.echo(f"error: adapters tui needs a terminal ({' and '.join(redirected)} {verb} not one); "
                   "run it in a terminal, not in a pipe or with input redirected", err=True)
        raise typer.Exit(2)
    from adapters_tui.app import AdaptersApp

    AdaptersApp(store_root=store, configs_dir=configs, server_url=connect, api_key=api_key, initial_tab=tab).run()


def register(app: typer.Typer) -> None:
    app.command("tui")(tui)


def main() -> None:
    standalone = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(standalone)
    standalone()
