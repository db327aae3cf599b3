"""Shared pieces of the command line: console, options, passphrases and exit codes.

Exit codes (:class:`ExitCode`): 0 success; 1 the job ran but something needs attention
(quarantined files, a failed audit check, an unknown pseudonym); 2 usage or configuration
error; 3 authentication failure; 4 internal error; 5 the output or the database could not be
written; 130 interrupted. The layers below never name an exit code: an expected error carries
an :class:`~keystore.errors.ErrorKind`, and :func:`exit_code_of` is the one place that maps a
kind to a code.
"""

from __future__ import annotations

import enum
import getpass
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from keystore.crypto import ScryptParams
from keystore.errors import ErrorKind
from keystore.stamps import os_user
from pseudo.errors import PseudoError


class ExitCode(enum.IntEnum):
    """The exit statuses of ``pseudo``, as README.md documents them."""

    OK = 0
    ATTENTION = 1
    USAGE = 2
    AUTHENTICATION = 3
    INTERNAL = 4
    #: the output or the database could not be written (disk full, permissions, server down)
    UNAVAILABLE = 5
    INTERRUPTED = 130


#: The exit status of each kind of expected error.
EXIT_CODES: dict[ErrorKind, ExitCode] = {
    ErrorKind.ATTENTION: ExitCode.ATTENTION,
    ErrorKind.USAGE: ExitCode.USAGE,
    ErrorKind.AUTHENTICATION: ExitCode.AUTHENTICATION,
    ErrorKind.UNAVAILABLE: ExitCode.UNAVAILABLE,
}

EXIT_OK, EXIT_ATTENTION, EXIT_USAGE = ExitCode.OK, ExitCode.ATTENTION, ExitCode.USAGE
EXIT_AUTH, EXIT_INTERNAL, EXIT_ENVIRONMENT = (
    ExitCode.AUTHENTICATION,
    ExitCode.INTERNAL,
    ExitCode.UNAVAILABLE,
)

#: Messages, progress and warnings go to stderr; data goes to stdout.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


#: Control characters (C0 but tab and newline, DEL, C1): a terminal would act on them.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """Text from a file or a user with every control character shown as ``\\xNN``.

    An escape sequence in a requester, a reason, a patient name or a file name would otherwise
    reach the terminal and recolour, hide or rewrite what is shown. Tabs and newlines stay.
    For a string printed with ``markup=False`` or put into a :class:`rich.text.Text`.
    """
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(text))


def safe(text: object) -> str:
    """Untrusted text for a Rich markup string or a table cell: :func:`printable`, and every
    ``[`` that would open a markup tag escaped, so ``[/]`` or ``[red]`` is shown as it is."""
    return escape(printable(text))


class UserError(PseudoError):
    """A problem with what the user asked; printed as one line."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.USAGE) -> None:
        super().__init__(message)
        self.kind = kind


def default_vault() -> Path | None:
    """``$PSEUDO_VAULT``, else None: there is no implicit vault (a vault found or made by
    accident in the current folder would hold another secret, and pseudonyms that link to
    nothing made before)."""
    value = os.environ.get("PSEUDO_VAULT")
    return Path(value) if value else None


VaultOption = Annotated[
    Path | None,
    typer.Option(
        "--vault",
        help="Vault folder [default: $PSEUDO_VAULT; required].",
        show_default=False,
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Linkage store URL (e.g. postgresql+psycopg://host/db) instead of the vault's.",
        show_default=False,
    ),
]
#: ``--policy`` of the commands that pseudonymize into a project (run, fetch)
ProjectPolicyOption = Annotated[
    str | None,
    typer.Option(
        "--policy",
        help="Shipped policy name or a policy YAML file [default: the project's recorded "
        "policy; for its first run, default].",
        show_default=False,
    ),
]
ChangePolicyOption = Annotated[
    bool,
    typer.Option(
        "--change-policy",
        help="Accept a policy other than the one the project recorded (audited; later "
        "batches then use it).",
    ),
]
PixelsOption = Annotated[
    str | None,
    typer.Option(
        "--pixels",
        metavar="on|off",
        help="Find and blank burned-in text in the pixels (on), or leave the pixels untouched "
        "for your own pixel review (off; the report and De-identification Method say so) "
        "[default: the project's recorded setting; for its first run, on]. A change is a "
        "change of policy (--change-policy).",
        show_default=False,
    ),
]


def pixels_setting(pixels: str | None) -> str | None:
    """``--pixels`` checked: on, off, or None (the project's recorded setting)."""
    if pixels is not None and pixels not in ("on", "off"):
        raise UserError(f"--pixels {pixels}: expected on or off")
    return pixels


PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="Read the operator passphrase from this file [default: $PSEUDO_PASSPHRASE, else ask].",
        show_default=False,
    ),
]
ReidPassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--reid-passphrase-file",
        help="Read the re-identification passphrase from this file "
        "[default: $PSEUDO_REID_PASSPHRASE, else ask].",
        show_default=False,
    ),
]


def vault_path(option: Path | None) -> Path:
    """The vault folder chosen by ``--vault`` or ``$PSEUDO_VAULT``; without either, stop with
    one line (never a default folder: only ``pseudo vault init`` creates a vault)."""
    chosen = option if option is not None else default_vault()
    if chosen is None:
        raise UserError(
            "no vault given: name the project's vault with --vault PATH or $PSEUDO_VAULT "
            "(`pseudo vault init` only for a new study: a new vault links to nothing earlier)"
        )
    return chosen


def read_passphrase(file: Path | None, env_var: str, what: str, *, confirm: bool = False) -> str:
    """A passphrase from a file, the environment, or a hidden prompt on the terminal."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{file}: cannot read {what} passphrase file ({exc.strerror})") from exc
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise UserError(f"{file}: the {what} passphrase file is empty")
        return lines[0]
    value = os.environ.get(env_var)
    if value:
        return value
    if not sys.stdin.isatty():
        raise UserError(
            f"no {what} passphrase: set {env_var}, give a passphrase file, or run in a terminal"
        )
    first = getpass.getpass(f"{what.capitalize()} passphrase: ")
    if confirm and getpass.getpass(f"Repeat the {what} passphrase: ") != first:
        raise UserError(f"the two {what} passphrases differ")
    return first


def operator_passphrase(file: Path | None, *, confirm: bool = False) -> str:
    """The operator passphrase (``--passphrase-file`` / ``$PSEUDO_PASSPHRASE`` / prompt)."""
    return read_passphrase(file, "PSEUDO_PASSPHRASE", "operator", confirm=confirm)


def given_operator_passphrase(file: Path | None) -> str | None:
    """The operator passphrase when it is given without asking (a file, the environment);
    None when it would be asked for or cannot be read (:func:`operator_passphrase` then says
    why, at the point where the command needs it)."""
    if file is None and not os.environ.get("PSEUDO_PASSPHRASE"):
        return None
    try:
        return operator_passphrase(file)
    except UserError:
        return None


def reid_passphrase(file: Path | None, *, confirm: bool = False) -> str:
    """The re-identification passphrase."""
    return read_passphrase(file, "PSEUDO_REID_PASSPHRASE", "re-identification", confirm=confirm)


def emit_json(data: object) -> None:
    """One JSON document on stdout (plain, fast for large documents; scripts read it)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def actor() -> str:
    """Who runs this command, for the audit log: the operating-system user and host."""
    return os_user()


def error_kind(exc: BaseException) -> ErrorKind | None:
    """The kind of an expected error (one of :mod:`keystore` or :mod:`pseudo`), None for any
    other exception (a bug). Read from the error's ``kind``: the classes need not be imported."""
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, ErrorKind) else None


def exit_code_of(exc: BaseException) -> ExitCode:
    """The exit status of an error: its kind's, or 4 (internal) for an unexpected one."""
    kind = error_kind(exc)
    return EXIT_CODES[kind] if kind is not None else ExitCode.INTERNAL


NewPassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--new-passphrase-file",
        help="Read the new slot's passphrase from this file "
        "[default: $PSEUDO_NEW_PASSPHRASE, else ask twice].",
        show_default=False,
    ),
]
ScryptNOption = Annotated[
    int | None,
    typer.Option(
        "--scrypt-n",
        help="scrypt cost n for the slot: a power of two from 16384 to 4194304 "
        "[default: 65536, about 0.2 s per guess; see `pseudo vault kdf-time`].",
        show_default=False,
    ),
]


def new_passphrase(file: Path | None, what: str) -> str:
    """The passphrase of a new or changed key slot (``--new-passphrase-file`` /
    ``$PSEUDO_NEW_PASSPHRASE`` / a hidden prompt asked twice)."""
    return read_passphrase(file, "PSEUDO_NEW_PASSPHRASE", f"new {what}", confirm=True)


def scrypt_params(n: int | None) -> ScryptParams | None:
    """scrypt parameters from ``--scrypt-n`` (None: the default), checked."""
    if n is None:
        return None
    params = ScryptParams(n=n)
    try:
        params.validate()
    except ValueError as exc:
        raise UserError(f"--scrypt-n {n}: {exc}") from exc
    return params


def confirm_destruction(expected: str, what: str, yes: bool) -> None:
    """Ask the person at the terminal to type ``expected`` (or accept ``--yes``); else refuse."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{what} cannot be undone: confirm with --yes (no terminal to ask)")
    err.print(f"{what} cannot be undone.", markup=False)
    answer = input(f"Type {expected!r} to confirm: ")
    if answer.strip() != expected:
        raise UserError(f"not confirmed: {what} was not done")


def print_fields(console: Console, title: str, rows: list[tuple[str, str]]) -> None:
    """Labelled values: a two-column table on a terminal (long values fold, never cut), plain
    ``label: value`` lines in a pipe. Values are untrusted text (see :func:`printable`)."""
    from rich.table import Table
    from rich.text import Text

    if not console.is_terminal:
        console.print(printable(title), markup=False)
        width = max((len(label) for label, _ in rows), default=0) + 1
        for label, value in rows:
            console.print(f"  {label + ':':<{width}} {printable(value)}", markup=False)
        return
    table = Table(title=Text(printable(title)), show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, Text(printable(value)))
    console.print(table)


_interruption_said = False


def say_interrupted(message: str) -> None:
    """Say on stderr how a command stopped on Ctrl-C or SIGTERM; :func:`pseudo.cli.app.main`
    then adds nothing (it says ``pseudo: interrupted`` for a command that said nothing)."""
    global _interruption_said
    err.print(message, markup=False)
    _interruption_said = True


def interruption_said() -> bool:
    """Whether the command has said how it was interrupted."""
    return _interruption_said


def recorded_policy(vault: Path | None, project: str) -> dict[str, Any] | None:
    """The policy ``project`` recorded at its first run (None before it). Read before the
    unlock, which checks it against the settings MAC (an edited record stops a run there)."""
    from keystore.vault import Vault

    return Vault.open(vault_path(vault)).project(project).policy


#: What a spreadsheet takes for the start of a formula in a CSV cell.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell that a spreadsheet shows as text and never runs as a formula
    (a leading ``'`` where it would)."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text
