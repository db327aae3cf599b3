"""The ``pseudo`` command: a thin typer layer over :mod:`pseudo` and :mod:`keystore`."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from keystore.errors import KeystoreError
from pseudo import __version__
from pseudo.batch import RunError
from pseudo.cli.audit_cmds import audit_app
from pseudo.cli.common import EXIT_INTERNAL, UserError, err, exit_code_of
from pseudo.cli.demo_cmd import demo_command
from pseudo.cli.dicomdir_cmd import dicomdir_command
from pseudo.cli.policy_cmds import policy_app
from pseudo.cli.reid_cmds import reidentify_command
from pseudo.cli.review_cmds import diff_command, dump_command, inspect_command
from pseudo.cli.run_cmd import run_command
from pseudo.cli.vault_cmds import project_app, vault_app
from pseudo.cli.verify_cmd import verify_command
from pseudo.policy import PolicyError
from pseudo.pools import PoolError

app = typer.Typer(
    name="pseudo",
    help="Pseudonymize DICOM for research; re-identify only through a logged request.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(vault_app, name="vault")
app.add_typer(project_app, name="project")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.command("run")(run_command)
app.command("reidentify")(reidentify_command)
app.command("verify")(verify_command)
app.command("diff")(diff_command)
app.command("inspect")(inspect_command)
app.command("dump")(dump_command)
app.command("demo")(demo_command)
app.command("dicomdir")(dicomdir_command)


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


EXPECTED_ERRORS = (KeystoreError, PolicyError, PoolError, RunError, UserError)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: one line per error, documented exit codes.

    Usage errors are reported by typer (exit 2); errors of the user's making raised by
    :mod:`pseudo` or :mod:`keystore` become one line on stderr; anything else is an internal
    error, shown with its traceback only under ``--debug``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="pseudo")
    except KeyboardInterrupt:
        err.print("pseudo: interrupted", markup=False)
        sys.exit(130)
    except EXPECTED_ERRORS as exc:
        if debug:
            traceback.print_exc()
        err.print(f"pseudo: error: {exc}", markup=False)
        sys.exit(exit_code_of(exc))
    except Exception as exc:
        if debug:
            traceback.print_exc()
        err.print(
            f"pseudo: internal error ({exc.__class__.__name__}); "
            "run again with --debug for details",
            markup=False,
        )
        sys.exit(EXIT_INTERNAL)
