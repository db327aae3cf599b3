"""``pseudo serve``: the DICOM node; ``pseudo serve status``: its counts."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pseudo.cli.common import (
    DbOption,
    PassphraseFileOption,
    PixelsOption,
    UserError,
    VaultOption,
    actor,
    emit_json,
    err,
    operator_passphrase,
    pixels_setting,
    print_fields,
    recorded_policy,
    say_interrupted,
    vault_path,
)

if TYPE_CHECKING:
    from pseudo.serve.node import NodeSettings

#: ``pseudo serve`` runs the node; ``pseudo serve status`` reads its journal.
serve_app = typer.Typer(no_args_is_help=False)

#: The file a systemd unit hands the operator passphrase in (``LoadCredential=``).
CREDENTIAL = "pseudo-passphrase"


@serve_app.callback(invoke_without_command=True)
def serve_command(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", help="Project whose keys to use.")
    ] = None,
    port: Annotated[
        int, typer.Option(help="TCP port to listen on (0: any free port, logged).")
    ] = 11112,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    ae_title: Annotated[
        str, typer.Option("--ae-title", help="The node's AE title (also when forwarding).")
    ] = "PSEUDO",
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            metavar="AET[@ADDRESS]",
            help="A calling AE title that may send, optionally only from ADDRESS (repeatable; "
            "at least one: no one else is admitted).",
        ),
    ] = None,
    forward: Annotated[
        str | None,
        typer.Option(
            "--forward", metavar="HOST:PORT:AET", help="Send each pseudonymized instance there."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Write pseudonymized instances into this folder instead."),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            help="Shipped policy name or YAML file [default: the project's recorded policy].",
            show_default=False,
        ),
    ] = None,
    pixels: PixelsOption = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="The node's TLS certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The node's TLS private key (PEM).")
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option("--tls-ca", help="CA certificates a client's certificate must chain to."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes for the pipeline.")] = 1,
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            metavar="NAME",
            help="The site the senders are at (`pseudo project add-site`), as in `pseudo run` "
            "[required when the project has several].",
            show_default=False,
        ),
    ] = None,
    status_port: Annotated[
        int | None,
        typer.Option(
            "--status-port",
            help="Serve the counts as JSON at http://127.0.0.1:PORT/status (loopback only; "
            "0: any free port, logged).",
        ),
    ] = None,
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Receive DICOM (C-ECHO, C-STORE), pseudonymize each instance as `pseudo run` does, and
    forward it by C-STORE (--forward) or write it into a folder (--output).

    An instance is acknowledged only once it is on disk in the node's spool and journal
    (<vault>/serve/<project>/); the queue survives a restart. Quarantined instances are kept
    there, never forwarded. SIGTERM stops accepting, finishes what was received, forwards what
    the destination takes, and exits 0. The operator passphrase: --passphrase-file,
    $PSEUDO_PASSPHRASE, or a systemd credential named pseudo-passphrase.

    Example: pseudo serve --project lung-trial --allow MODALITY1 --forward pacs:104:CORELAB
    """
    if ctx.invoked_subcommand is not None:
        return
    if project is None:
        raise UserError("--project is required")
    settings = _settings(
        host, port, ae_title, allow or [], forward, output, tls_cert, tls_key, tls_ca, workers
    )
    if status_port is not None:
        if not 0 <= status_port < 65536:
            raise UserError(f"--status-port {status_port}: expected 0 to 65535")
        settings = replace(settings, status_port=status_port)
    from keystore.session import VaultSession
    from pseudo.api import run_site
    from pseudo.batch.project_policy import choose_policy
    from pseudo.deid.trial import TrialValues, settings_of
    from pseudo.serve.folder import NodeFolder
    from pseudo.serve.node import Node

    _log_to_stderr()
    recorded = None if policy is not None else recorded_policy(vault, project)
    compiled, record = choose_policy(policy, recorded, pixels_setting(pixels))
    chosen = vault_path(vault)
    with VaultSession(chosen, db) as session:
        chosen_site = run_site(session, project, site)  # refused before anything is recorded
        keyring, _ = session.vault.unlock_for_run(
            project, operator_passphrase(_passphrase_file(passphrase_file)), record, actor=actor()
        )
        trial = TrialValues.of(settings_of(session.vault.project(project).trial), site=chosen_site)
        node = Node(
            settings,
            keyring,
            compiled,
            session.linkage,
            NodeFolder.of(chosen, project),
            audit=session.audit,
            actor=actor(),
            site=chosen_site,
            trial=trial,
        )
        previous = {
            sig: signal.signal(sig, lambda signum, frame: node.stopped.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            node.start()
            node.stopped.wait()
            err.print("pseudo serve: stopping: finishing what was received", markup=False)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            counts = node.drain()
    if node.failure is not None:
        raise RuntimeError("the node's pipeline failed") from node.failure
    if counts["queued"]:
        say_interrupted(
            f"pseudo serve: stopped with {counts['queued']} instance(s) queued: they are kept "
            "and sent when the node starts again"
        )


def _settings(
    host: str,
    port: int,
    ae_title: str,
    allow: list[str],
    forward: str | None,
    output: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    workers: int,
) -> NodeSettings:
    """The node's settings from the options, checked (one line for each problem)."""
    from pseudo.serve.access import AllowList, parse_allowed
    from pseudo.serve.node import NodeSettings
    from pseudo.serve.peer import AE_TITLE_MAX, PeerError, parse_peer

    if (forward is None) == (output is None):
        raise UserError("give one of --forward HOST:PORT:AET or --output DIR")
    if not allow:
        raise UserError(
            "no --allow AET[@ADDRESS]: name the modalities and PACS that may send (the node "
            "never admits everyone)"
        )
    if not 0 < len(ae_title) <= AE_TITLE_MAX:
        raise UserError(f"--ae-title {ae_title!r}: 1 to {AE_TITLE_MAX} characters")
    if not 0 <= port < 65536:
        raise UserError(f"--port {port}: expected 0 to 65535")
    tls = [tls_cert, tls_key, tls_ca]
    if any(tls) and not all(tls):
        raise UserError("TLS needs all three of --tls-cert, --tls-key and --tls-ca")
    try:
        peer = parse_peer(forward) if forward is not None else None
    except PeerError as exc:
        raise UserError(f"--forward {exc}") from exc
    return NodeSettings(
        host=host,
        port=port,
        ae_title=ae_title,
        allow=AllowList(tuple(parse_allowed(entry) for entry in allow)),
        forward=peer,
        output=output,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        workers=max(1, workers),
    )


def _passphrase_file(given: Path | None) -> Path | None:
    """``--passphrase-file``, else the systemd credential when the environment gives no
    passphrase."""
    if given is not None or os.environ.get("PSEUDO_PASSPHRASE"):
        return given
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL).is_file():
        return Path(credentials) / CREDENTIAL
    return None


def _log_to_stderr() -> None:
    """The node's log lines on stderr (a journal under systemd); pynetdicom's own only for
    errors (its informational lines name the instances' original UIDs)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    node_log = logging.getLogger("pseudo.serve")
    node_log.addHandler(handler)
    node_log.setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)


@serve_app.command("status")
def status_command(
    project: Annotated[str, typer.Option("--project", help="Project whose node to read.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
    vault: VaultOption = None,
) -> None:
    """Show a node's counts from its journal: received, pseudonymized, forwarded, queued,
    retried, quarantined, rejected associations. Needs no passphrase and works while the node
    runs.

    Example: pseudo serve status --project lung-trial
    """
    import sqlite3

    from pseudo.serve.folder import NodeFolder
    from pseudo.serve.journal import Journal

    folder = NodeFolder.of(vault_path(vault), project)
    if not folder.journal.is_file():
        raise UserError(f"project {project!r} has no node journal in {folder.root}")
    try:
        journal = Journal(folder.journal, read_only=True)
        counts = journal.counts()
        journal.close()
    except sqlite3.Error as exc:
        raise UserError(f"{folder.journal}: cannot read the node's journal ({exc})") from exc
    if as_json:
        emit_json(counts)
        return
    from pseudo.cli.common import out

    rows = [(name.replace("_", " "), str(value)) for name, value in counts.items()]
    print_fields(out, f"node of {project}", rows)
