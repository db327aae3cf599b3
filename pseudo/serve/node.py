"""The DICOM node: receive (C-ECHO, C-STORE), spool durably, pseudonymize, forward.

Three kinds of threads share the node's journal (:mod:`pseudo.serve.journal`):

* pynetdicom's association threads: an instance is written to the spool and recorded in the
  journal, on disk, before the success status is sent (:class:`~pseudo.serve.intake.Intake`:
  one flush covers every instance received meanwhile), so an acknowledged instance survives
  ``kill -9`` and a power cut;
* the pipeline thread (:class:`~pseudo.serve.stage.PipelineStage`): the spool through the
  per-file path of ``pseudo run`` in worker processes, committed by its crash-safe protocol;
* the forwarding thread (:class:`~pseudo.serve.forward.Forwarder`), with ``--forward``.

:meth:`Node.drain` (SIGTERM) stops accepting associations, lets those in progress end,
pseudonymizes everything received and forwards as much as the destination takes.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from keystore.audit import AuditLog
from keystore.errors import DatabaseError
from keystore.keyring import Keyring
from keystore.linkage import LinkageStore
from pseudo.batch.discovery import check_output_owner
from pseudo.batch.errors import OutputError
from pseudo.deid.identity import Site
from pseudo.deid.trial import TrialValues
from pseudo.errors import PseudoError
from pseudo.policy.compiled import CompiledPolicy
from pseudo.serve.access import AllowList, tls_context
from pseudo.serve.folder import NodeFolder
from pseudo.serve.forward import Backoff, Forwarder
from pseudo.serve.intake import Intake
from pseudo.serve.journal import Counter, Journal
from pseudo.serve.peer import Peer
from pseudo.serve.stage import PipelineStage
from pseudo.serve.status_http import StatusServer
from pseudo.serve.tcp import no_delay

log = logging.getLogger("pseudo.serve")

#: C-STORE status sent when the instance could not be made durable: the sender keeps it.
OUT_OF_RESOURCES = 0xA700
#: The transfer syntaxes the node prefers when a peer proposes others too.
KNOWN_TRANSFER_SYNTAXES = frozenset(ALL_TRANSFER_SYNTAXES)
#: Seconds a drain waits for the associations in progress to end before closing them.
DRAIN_ASSOCIATIONS = 60.0


class NodeError(PseudoError):
    """The node cannot start as configured."""


@dataclass(frozen=True)
class NodeSettings:
    """How the node listens, whom it admits, and where its outputs go."""

    host: str
    port: int
    ae_title: str
    allow: AllowList
    forward: Peer | None = None
    output: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    workers: int = 1
    #: the loopback HTTP port of the counts (None: no endpoint; 0: any free port, logged)
    status_port: int | None = None


class Node:
    """One project's DICOM node (see the module's docstring)."""

    def __init__(
        self,
        settings: NodeSettings,
        keyring: Keyring,
        policy: CompiledPolicy,
        store: LinkageStore,
        folder: NodeFolder,
        *,
        audit: AuditLog | None = None,
        actor: str = "",
        site: Site | None = None,
        trial: TrialValues | None = None,
    ) -> None:
        if (settings.forward is None) == (settings.output is None):
            raise NodeError("give one of --forward HOST:PORT:AET or --output DIR")
        if not settings.allow.entries:
            raise NodeError(
                "no --allow AET[@ADDRESS] given: the node would admit no one (it never admits "
                "everyone)"
            )
        if settings.output is not None:
            check_output_owner(settings.output, keyring.settings.prefix)
        self.settings = settings
        self.folder = folder
        folder.create()
        self.journal = Journal(folder.journal)
        self.intake = Intake(folder, self.journal)
        self.stage = PipelineStage(
            keyring,
            policy,
            store,
            folder,
            self.journal,
            settings.output or folder.outbox,
            forwarding=settings.forward is not None,
            workers=settings.workers,
            audit=audit,
            actor=actor,
            site=site,
            trial=trial,
        )
        self.forwarder = (
            Forwarder(settings.forward, settings.ae_title, folder, self.journal)
            if settings.forward is not None
            else None
        )
        self._received = threading.Event()  # the spool has something new
        self._committed = threading.Event()  # the outbox has something new
        self._draining = threading.Event()
        self._pipeline_done = threading.Event()
        self._threads: list[threading.Thread] = []
        #: set to stop the node (a signal's handler does; so does a failure of the pipeline)
        self.stopped = threading.Event()
        self._drained: dict[str, int] | None = None
        #: what stopped the pipeline, when it was not a drain (a bug)
        self.failure: BaseException | None = None
        self._server: ThreadedAssociationServer | None = None
        self._status: StatusServer | None = None
        self.ae = AE(settings.ae_title)
        self.address: tuple[str, int] = (settings.host, settings.port)

    # -- starting and stopping ------------------------------------------------------------
    def start(self) -> None:
        """Start the pipeline and forwarding threads, then listen."""
        removed = self.folder.clean_spool(self.journal.spools())
        if removed:
            log.info("%d spool file(s) never acknowledged were removed", removed)
        if self.forwarder is not None and (swept := self.forwarder.sweep()):
            log.info("%d outbox file(s) already forwarded were removed", swept)
        self.stage.start()
        self.intake.start()
        self._spawn("pseudo-pipeline", self._pipeline_loop)
        if self.forwarder is not None:
            self._spawn("pseudo-forward", self._forward_loop)
        # every storage SOP class, a modality's private ones too: pynetdicom then takes any
        # abstract syntax it does not know as storage (Verification is still negotiated)
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        self.ae.add_supported_context(Verification)
        self.ae.maximum_associations = 32
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, no_delay),
            (evt.EVT_REQUESTED, self._requested),
            (evt.EVT_C_ECHO, self._echo),
            (evt.EVT_C_STORE, self._store),
        ]
        try:
            server = self.ae.start_server(
                self.address, block=False, evt_handlers=handlers, ssl_context=self._tls()
            )
        except OSError as exc:
            raise NodeError(
                f"cannot listen on {self.settings.host}:{self.settings.port} ({exc.strerror})"
            ) from exc
        assert server is not None
        self._server = server
        self.address = (str(server.server_address[0]), int(server.server_address[1]))
        if self.settings.status_port is not None:
            self._start_status(self.settings.status_port)
        queued = self.journal.counts()["queued"]
        log.info(
            "listening on %s:%d as %s; %d instance(s) queued from before",
            self.address[0],
            self.address[1],
            self.settings.ae_title,
            queued,
        )
        self._received.set()

    def _start_status(self, port: int) -> None:
        try:
            self._status = StatusServer(self.journal.counts, port)
        except OSError as exc:
            raise NodeError(f"--status-port {port}: cannot listen ({exc.strerror})") from exc
        self._status.start()
        log.info("counts at http://127.0.0.1:%d/status", self._status.port)

    def _tls(self) -> ssl.SSLContext | None:
        s = self.settings
        given = [p for p in (s.tls_cert, s.tls_key, s.tls_ca) if p is not None]
        if not given:
            return None
        if s.tls_cert is None or s.tls_key is None or s.tls_ca is None:
            raise NodeError("TLS needs all three of --tls-cert, --tls-key and --tls-ca")
        return tls_context(s.tls_cert, s.tls_key, s.tls_ca, self._refused)

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def drain(self) -> dict[str, int]:
        """Stop accepting associations, let those in progress end, pseudonymize everything
        received, forward what the destination takes, and close; return the counts (once
        drained, the counts again)."""
        if self._drained is not None:
            return self._drained
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            deadline = time.monotonic() + DRAIN_ASSOCIATIONS
            while self.ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            for assoc in self.ae.active_associations:
                assoc.abort()  # what it sent and we acknowledged is in the spool
        self.intake.close()
        self._draining.set()
        self._received.set()
        self._committed.set()
        for thread in self._threads:
            thread.join()
        if self._status is not None:
            self._status.close()
        counts = self._drained = self.journal.counts()
        try:
            self.stage.close(counts)
        finally:
            self.journal.close()
        log.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
        return counts

    # -- association handlers (pynetdicom's threads) --------------------------------------
    def _requested(self, event: evt.Event) -> None:
        """Reject a peer that is not on the allow-list, before any negotiation."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        calling = str(request.calling_ae_title if request is not None else "").strip()
        address = str(assoc.requestor.address)
        if request is not None and self.settings.allow.admits(calling, address):
            prefer_known_transfer_syntaxes(request)
            return
        assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected-permanent, calling AE not recognised
        assoc.kill()  # as pynetdicom ends an association it rejects itself
        self._refused(
            f"association from {_shown(calling)}@{address} refused: not on the allow-list"
        )

    def _refused(self, message: str) -> None:
        log.warning("%s", message)
        with contextlib.suppress(sqlite3.Error):  # not worth failing a refusal for
            self.journal.count(Counter.REJECTED_ASSOCIATIONS)

    @staticmethod
    def _echo(event: evt.Event) -> int:
        return 0x0000

    def _store(self, event: evt.Event) -> int:
        """Acknowledge an instance only once it is in the spool and the journal, on disk."""
        try:
            row_id = self.intake.keep(event.encoded_dataset(include_meta=True))
        except (OSError, sqlite3.Error) as exc:
            log.error("cannot keep a received instance (%s): not acknowledged", exc)
            return OUT_OF_RESOURCES
        log.info("instance #%d received", row_id)
        self._received.set()
        return 0x0000

    # -- the pipeline and forwarding threads ----------------------------------------------
    def _pipeline_loop(self) -> None:
        backoff = Backoff()
        try:
            while True:
                self._received.clear()
                try:
                    taken = self.stage.step()
                except (OutputError, DatabaseError) as exc:
                    log.error("cannot pseudonymize now (%s); trying again", exc)
                    if self._draining.is_set():
                        self.stage.status = "interrupted"
                        return
                    self._received.wait(backoff.failed())
                    continue
                except Exception as exc:  # a bug: keep the spool, stop the node
                    log.error(
                        "the pipeline stopped (%s): stopping the node", exc.__class__.__name__
                    )
                    self.stage.status = "failed"
                    self.failure = exc
                    self.stopped.set()
                    return
                backoff.succeeded()
                if taken:
                    self._committed.set()
                    continue
                if self._draining.is_set():
                    self.stage.status = "completed"
                    return
                self._received.wait(5.0)
        finally:
            self._pipeline_done.set()
            self._committed.set()

    def _forward_loop(self) -> None:
        assert self.forwarder is not None
        backoff = Backoff()
        while True:
            finishing = self._pipeline_done.is_set() and self._draining.is_set()
            self._committed.clear()
            try:
                delivered, missed = self.forwarder.step()
            except Exception as exc:
                log.error("forwarding failed (%s); trying again", exc.__class__.__name__)
                delivered, missed = 0, 1
            if missed:
                if finishing:
                    log.warning(
                        "stopping with instances still to forward: they wait for the restart"
                    )
                    return
                # not woken by new work (the delay holds); a drain wakes it, or during a drain
                # the end of the pipeline's work, after which it tries a last time
                wake = self._pipeline_done if self._draining.is_set() else self._draining
                wake.wait(backoff.failed())
                continue
            backoff.succeeded()
            if delivered:
                continue
            if finishing:
                return
            self._committed.wait(5.0)


def prefer_known_transfer_syntaxes(request: A_ASSOCIATE) -> None:
    """Put first, in each presentation context the peer proposes, the transfer syntaxes that
    pydicom knows, in the peer's order: an unrestricted storage service accepts the first one
    proposed, and a peer that offers a private syntax before a standard one gets the standard
    one, as a restricted service would choose (one that offers only private syntaxes has its
    instances go the way of ``pseudo run`` on such a file)."""
    for context in request.presentation_context_definition_list:
        proposed = list(context.transfer_syntax)
        known = [syntax for syntax in proposed if syntax in KNOWN_TRANSFER_SYNTAXES]
        if known and known[0] != proposed[0]:
            ordered: list[str | bytes | UID] = [*known, *(s for s in proposed if s not in known)]
            context.transfer_syntax = ordered


def _shown(text: str) -> str:
    """A peer's text for the log, with anything unprintable shown as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)
