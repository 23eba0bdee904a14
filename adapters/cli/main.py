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
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"adapters {version('adapter-manager')}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Train, store and serve LoRA and prefix adapters on one quantized, frozen base model."""


_registered = False


# Packages above this one (the TUI) add their commands through this entry-point group, as
# simonw/llm's plugins do: the core never imports them. Each entry is a ``register(app)``.
COMMAND_ENTRY_POINTS = "adapters.commands"


def _register_commands() -> None:
    global _registered
    if _registered:
        return
    from importlib.metadata import entry_points

    from adapters.cli import cv as cli_cv
    from adapters.cli import distill as cli_distill
    from adapters.cli import doctor
    from adapters.cli import merge as cli_merge
    from adapters.cli import serve as server_cli
    from adapters.cli import store as cli_store
    from adapters.cli import sweep as cli_sweep
    from adapters.cli import train as cli_train
    for module in (cli_train, cli_store, cli_merge, doctor, server_cli, cli_sweep, cli_cv, cli_distill):
        module.register(app)
    for entry in entry_points(group=COMMAND_ENTRY_POINTS):
        entry.load()(app)
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


def _click_errors(name: str) -> tuple[type, ...]:
    """click's exception class ``name`` from both clicks: typer >= 0.28 raises those of its own
    vendored copy (``typer._click``); older typer and other libraries raise plain click's."""
    from click import exceptions as click

    classes = [getattr(click, name)]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        pass
    else:
        classes.append(getattr(vendored, name))
    return tuple(classes)


def _plain_metavars(command, parent=None) -> None:
    """Help that names what to type: ``--name NAME`` and a bare ``--json`` or ``--help`` rather
    than the type labels typer >= 0.27 prints (``--name <str>``, ``--set <list[str]>``,
    ``--json <bool>``)."""
    ctx = command.context_class(command, parent=parent, info_name=command.name,
                                help_option_names=app.info.context_settings["help_option_names"])
    for param in [*getattr(command, "params", []), command.get_help_option(ctx)]:
        if param is None or param.param_type_name == "argument":
            continue
        param.metavar = "" if getattr(param, "is_flag", False) else (param.name or "").rstrip("_").upper()
    for sub in getattr(command, "commands", {}).values():
        _plain_metavars(sub, ctx)


def _usage_error(error) -> int:
    """A click usage error as one line and a hint (exit 2), like every other user-facing error."""
    from adapters.errors import UsageError

    ctx = getattr(error, "ctx", None)
    path = ctx.command_path if ctx is not None else "adapters"
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    return fail(UsageError(message.rstrip("."), f"see '{path} --help'"))


def main(argv: list[str] | None = None) -> int:
    import typer.main

    from adapters_store.errors import HintedError

    _register_commands()
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    _plain_metavars(command)
    if not args:  # the bare command: what it can do
        print(command.get_help(command.make_context("adapters", ["--help"], resilient_parsing=True)))
        return 0
    try:
        result = command.main(args=args, prog_name="adapters", standalone_mode=False)
    except HintedError as error:
        return fail(error)
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    except _click_errors("UsageError") as error:  # also BadParameter, NoSuchOption, MissingParameter ...
        return _usage_error(error)
    except _click_errors("ClickException") as error:
        error.show()
        return error.exit_code
    # click returns the code of a `typer.Exit(code)` instead of raising it.
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
