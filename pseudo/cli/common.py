"""Shared pieces of the command line: console, options, passphrases and exit codes.

Exit codes: 0 success; 1 the job ran but something needs attention (quarantined files, a
failed audit check, an unknown pseudonym); 2 usage or configuration error; 3 authentication
failure; 4 internal error; 130 interrupted.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from keystore.crypto import ScryptParams
from keystore.errors import KeystoreError
from keystore.stamps import os_user
from pseudo.errors import PseudoError

EXIT_OK, EXIT_ATTENTION, EXIT_USAGE, EXIT_AUTH, EXIT_INTERNAL = 0, 1, 2, 3, 4
#: The output or the database could not be written (disk full, permissions, server down).
EXIT_ENVIRONMENT = 5

#: Messages, progress and warnings go to stderr; data goes to stdout.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


class UserError(PseudoError):
    """A problem with what the user asked; printed as one line."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_vault() -> Path:
    """``$PSEUDO_VAULT``, else ``./pseudo-vault``."""
    return Path(os.environ.get("PSEUDO_VAULT") or "pseudo-vault")


VaultOption = Annotated[
    Path | None,
    typer.Option(
        "--vault",
        help="Vault folder \\[default: $PSEUDO_VAULT, else ./pseudo-vault].",
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
PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="Read the operator passphrase from this file "
        "\\[default: $PSEUDO_PASSPHRASE, else ask].",
        show_default=False,
    ),
]
ReidPassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--reid-passphrase-file",
        help="Read the re-identification passphrase from this file "
        "\\[default: $PSEUDO_REID_PASSPHRASE, else ask].",
        show_default=False,
    ),
]


def vault_path(option: Path | None) -> Path:
    """The vault folder chosen by ``--vault`` or the environment."""
    return option if option is not None else default_vault()


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


def exit_code_of(exc: BaseException) -> int:
    """The exit status that an expected error maps to."""
    if isinstance(exc, KeystoreError | PseudoError):
        return exc.exit_code
    return EXIT_USAGE


NewPassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--new-passphrase-file",
        help="Read the new slot's passphrase from this file "
        "\\[default: $PSEUDO_NEW_PASSPHRASE, else ask twice].",
        show_default=False,
    ),
]
ScryptNOption = Annotated[
    int | None,
    typer.Option(
        "--scrypt-n",
        help="scrypt cost n for the slot: a power of two from 16384 to 4194304 "
        "\\[default: 65536, about 0.2 s per guess; see `pseudo vault kdf-time`].",
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
