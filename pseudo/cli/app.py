"""The ``pseudo`` command: a thin typer layer over :mod:`pseudo` and :mod:`keystore`."""

from __future__ import annotations

import importlib
import signal
import sys
import traceback
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

from pseudo import __version__
from pseudo.cli.common import (
    ExitCode,
    err,
    error_kind,
    exit_code_of,
    interruption_said,
    printable,
)
from pseudo.cli.helpformat import PseudoContext, tidy

#: Each subcommand (or group) and where it is defined, in the order ``--help`` lists them.
#: A command loads only its own module: ``pseudo run`` does not import what ``pseudo diff``
#: needs, and starts unlocking the vault before it loads the database layers.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pseudo.cli.run_cmd", "run_command"),
    "fetch": ("pseudo.cli.fetch_cmd", "fetch_command"),
    "reidentify": ("pseudo.cli.reid_cmds", "reidentify_command"),
    "verify": ("pseudo.cli.verify_cmd", "verify_command"),
    "diff": ("pseudo.cli.review_cmds", "diff_command"),
    "inspect": ("pseudo.cli.review_cmds", "inspect_command"),
    "dump": ("pseudo.cli.review_cmds", "dump_command"),
    "demo": ("pseudo.cli.demo_cmd", "demo_command"),
    "dicomdir": ("pseudo.cli.dicomdir_cmd", "dicomdir_command"),
    "serve": ("pseudo.cli.serve_cmd", "serve_app"),
    "vault": ("pseudo.cli.vault_cmds", "vault_app"),
    "project": ("pseudo.cli.vault_cmds", "project_app"),
    "identity": ("pseudo.cli.identity_cmds", "identity_app"),
    "policy": ("pseudo.cli.policy_cmds", "policy_app"),
    "audit": ("pseudo.cli.audit_cmds", "audit_app"),
}

#: How ``--help`` is formatted: click's plain layout (None), not typer's Rich panels. Click
#: re-flows the paragraphs of a docstring to the terminal (at most 80 columns), gives an
#: option's name its own line when it is long instead of truncating it, and shows no metavar
#: on flags; Rich panels squeeze every column of the option table into 80 columns and cut
#: long option names and environment variables ("--reid-passphrase-fi…").
HELP_MARKUP = None


class LazyCommands(TyperGroup):
    """The top-level group: a subcommand's module is imported when the subcommand is used."""

    context_class = PseudoContext

    def list_commands(self, ctx: Any) -> list[str]:
        """Every subcommand, in the order of :data:`COMMANDS`."""
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The subcommand ``cmd_name`` (None if there is none), loaded on first use."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, name = COMMANDS[cmd_name]
            target = getattr(importlib.import_module(module), name)
            # Built as a subcommand of a group made like ``app``, as if registered there.
            holder = typer.Typer(
                add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=HELP_MARKUP
            )
            holder.callback()(_no_options)
            if isinstance(target, typer.Typer):
                holder.add_typer(target, name=cmd_name)
            else:
                holder.command(cmd_name)(target)
            group = typer.main.get_command(holder)
            assert isinstance(group, TyperGroup)
            self.commands[cmd_name] = tidy(group.commands[cmd_name])
        return self.commands.get(cmd_name)


def _no_options() -> None:
    """The callback of a subcommand's holder group (never run)."""


app = typer.Typer(
    name="pseudo",
    help="Pseudonymize DICOM for research; re-identify only through a logged request.",
    cls=LazyCommands,
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"pseudo {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """pseudo: pseudonymize DICOM for research, with a key vault and logged re-identification."""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: one line per error, documented exit codes.

    Usage errors are reported by typer (exit 2); the expected errors raised by :mod:`pseudo`
    or :mod:`keystore` (those with an :class:`~keystore.errors.ErrorKind`, told apart without
    importing their modules) become one line on stderr and the exit status of their kind;
    anything else is an internal error, shown with its traceback only under ``--debug``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    # SIGTERM stops a command as Ctrl-C does, from its first instruction on (a run installs
    # its own handler later, with the same effect)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app(args=args, prog_name="pseudo")
    except KeyboardInterrupt:
        err.print("pseudo: interrupted", markup=False)
        sys.exit(ExitCode.INTERRUPTED.value)
    except SystemExit as exc:
        # typer turns a Ctrl-C into a silent exit 130: say it, unless the command did
        if exc.code == ExitCode.INTERRUPTED.value and not interruption_said():
            err.print("pseudo: interrupted", markup=False)
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if error_kind(exc) is not None:
            err.print(f"pseudo: error: {printable(exc)}", markup=False)
            sys.exit(exit_code_of(exc).value)
        err.print(
            f"pseudo: internal error ({exc.__class__.__name__}); "
            "run again with --debug for details",
            markup=False,
        )
        sys.exit(ExitCode.INTERNAL.value)
