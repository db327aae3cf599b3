"""Forwarding: the outbox to the destination by C-STORE, each instance marked delivered (and
its outbox copy removed) as soon as the destination answers success.

Files are sent as they were written, byte for byte, in their own transfer syntax (never
decoded or converted), up to :data:`BATCH` in one association. A destination that is down,
refuses the association or answers a failure leaves the instances in the outbox: they are sent
again later (see :class:`Backoff`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association

from pseudo.serve.folder import NodeFolder
from pseudo.serve.journal import Counter, Journal, Row, State
from pseudo.serve.peer import Peer
from pseudo.serve.tcp import no_delay

log = logging.getLogger("pseudo.serve")

#: Instances sent in one association.
BATCH = 64
#: Presentation contexts one association can propose.
MAX_CONTEXTS = 128
#: Statuses after which the destination holds the instance (success and the storage warnings:
#: coercion of data elements, element discarded, data set does not match SOP class).
STORED = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


@dataclass
class Backoff:
    """Delays between attempts while the destination fails: doubling up to ``most`` seconds."""

    first: float = 0.5
    most: float = 30.0
    current: float = 0.0

    def failed(self) -> float:
        """The delay before the next attempt after a failure."""
        self.current = min(self.most, self.current * 2 if self.current else self.first)
        return self.current

    def succeeded(self) -> None:
        """The destination answered: the next failure starts from the first delay again."""
        self.current = 0.0


class Forwarder:
    """Sends the outbox to ``destination``, calling as ``ae_title``."""

    def __init__(self, destination: Peer, ae_title: str, folder: NodeFolder, journal: Journal):
        self.destination = destination
        self.folder = folder
        self.journal = journal
        self.ae = AE(ae_title)
        # the file is sent as it is on disk: no decoding, no re-encoding
        _config.STORE_SEND_CHUNKED_DATASET = True
        #: instances forwarded in this step, their marks not yet on disk
        self._sent: list[tuple[int, Path]] = []

    def step(self) -> tuple[int, int]:
        """Send the oldest instances of the outbox; return (delivered, not delivered)."""
        rows = self._rows()
        if not rows:
            return 0, 0
        assoc = self._associate({(str(r.sop_class), str(r.transfer_syntax)) for r in rows})
        if assoc is None:
            self.journal.count(Counter.FORWARD_RETRIES, len(rows))
            return 0, len(rows)
        delivered = 0
        try:
            for row in rows:
                if self._send(assoc, row):
                    delivered += 1
                elif not assoc.is_established:
                    break
        finally:
            self._settle()
            if assoc.is_established:
                assoc.release()
        missed = len(rows) - delivered
        if missed:
            self.journal.count(Counter.FORWARD_RETRIES, missed)
        return delivered, missed

    def _associate(self, contexts: set[tuple[str, str]]) -> Association | None:
        """An association proposing ``contexts``; None when the destination cannot be
        reached or refuses (said in the log)."""
        assoc = self.ae.associate(
            self.destination.host,
            self.destination.port,
            contexts=[build_context(sop, [syntax]) for sop, syntax in sorted(contexts)],
            ae_title=self.destination.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)],
        )
        if not assoc.is_established:
            why = "refused the association" if assoc.is_rejected else "cannot be reached"
            log.warning("destination %s %s; instances wait", self.destination, why)
            return None
        return assoc

    def _rows(self) -> list[Row]:
        """The oldest outbox instances whose presentation contexts fit in one association."""
        chosen: list[Row] = []
        contexts: set[tuple[str | None, str | None]] = set()
        for row in self.journal.rows(State.OUTBOX, BATCH):
            context = (row.sop_class, row.transfer_syntax)
            if context not in contexts and len(contexts) == MAX_CONTEXTS:
                break
            contexts.add(context)
            chosen.append(row)
        return chosen

    def _send(self, assoc: Association, row: Row) -> bool:
        """Send one instance; on success mark it delivered and remove its outbox copy."""
        assert row.output
        path = self.folder.outbox / row.output
        try:
            status = assoc.send_c_store(path)
        except ValueError:  # no accepted presentation context for it
            log.warning(
                "instance #%d: the destination does not accept %s in %s; it waits",
                row.id,
                UID(str(row.sop_class)).name,
                UID(str(row.transfer_syntax)).name,
            )
            return False
        code = int(status.Status) if "Status" in status else None
        if code not in STORED:
            shown = "no answer" if code is None else f"status 0x{code:04X}"
            log.warning("instance #%d: the destination answered %s; it waits", row.id, shown)
            return False
        self.journal.delivered([row.id])
        log.info("instance #%d forwarded: %s", row.id, row.output)
        self._sent.append((row.id, path))
        return True

    def _settle(self) -> None:
        """Make the forwarded marks of this step durable, then remove the outbox copies: a
        copy goes only once its mark survives a power cut (until then, a lost mark means the
        instance is sent again, the same bytes)."""
        sent, self._sent = self._sent, []
        if not sent:
            return
        self.journal.settle([row_id for row_id, _ in sent])
        for _, path in sent:
            path.unlink(missing_ok=True)

    def sweep(self) -> int:
        """Remove outbox copies of instances already forwarded (the node died between the
        forwarded mark and their removal); return how many."""
        waiting = self.journal.outputs(State.OUTBOX)
        removed = 0
        for path in self.folder.outbox.rglob("*.dcm"):
            relative = path.relative_to(self.folder.outbox)
            if relative.parts[0].startswith("."):
                continue  # the pipeline's temporary folder
            if str(relative) not in waiting:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
