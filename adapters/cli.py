"""The ``adapters`` command line. Heavy libraries (torch, transformers) are imported inside the
commands that need them, so ``adapters --help`` and the store commands start fast."""

from __future__ import annotations

import sys

import typer


app = typer.Typer(
    name="adapters",
    help="Train, store and serve LoRA and prefix adapters on one quantized, frozen base model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


_registered = False


def _register_commands() -> None:
    global _registered
    if _registered:
        return
    from adapters import cli_store, cli_train
    from adapters.server import cli as server_cli

    cli_train.register(app)
    cli_store.register(app)
    from adapters import cli_merge
    cli_merge.register(app)
    from adapters import doctor
    doctor.register(app)
    server_cli.register(app)
    from tui import cli as tui_cli
    tui_cli.register(app)
    _registered = True


def fail(error: Exception) -> int:
    """Print a user-facing error with its hint to stderr and return its exit code."""
    from rich.console import Console

    from rich.text import Text

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    # Messages are plain text (paths, lists in brackets): never parse them as rich markup.
    console.print(Text("error: ", style="bold red") + Text(getattr(error, "message", str(error))))
    hint = getattr(error, "hint", None)
    if hint:
        console.print(Text("hint: ", style="yellow") + Text(hint))
    return getattr(error, "exit_code", 1)


def main(argv: list[str] | None = None) -> int:
    from store.errors import HintedError

    _register_commands()
    try:
        result = app(args=argv, standalone_mode=False)
    except HintedError as error:
        return fail(error)
    except typer.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # click's --help and usage errors
        return int(exc.code or 0)
    except Exception as error:  # click.UsageError and friends carry their own exit code
        import click

        if isinstance(error, click.ClickException):
            error.show()
            return error.exit_code
        raise
    # click returns the code of a `typer.Exit(code)` instead of raising it.
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
