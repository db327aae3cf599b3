"""The DICOM conversation of ``pseudo fetch`` with a PACS, over pynetdicom.

:class:`Finder` asks the PACS (C-FIND, Study Root) for the studies of an accession number,
then for their series and instances, level by level as the hierarchical model requires.
:func:`get_instances` retrieves instances by C-GET on the same association as their storage;
:func:`move_instances` asks the PACS to C-MOVE them to a temporary storage SCP of ours (for a
PACS that does not offer C-GET, and that knows our AE title, host and port).

Each instance is handed to a ``sink`` exactly as it arrived (its data set not decoded, in the
transfer syntax the PACS sent): nothing here reads or writes files. An instance that was not
asked for is refused. Failures are :class:`FetchError` with one line naming the peer: nothing
answers (unavailable), the association is rejected (a configuration matter: the PACS must know
our AE title), or the PACS ends it half-way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from types import TracebackType
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from keystore.errors import ErrorKind
from pseudo.errors import PseudoError
from pseudo.serve.peer import Peer

#: Seconds to wait for an association answer, a DIMSE message, or any network activity.
ACSE_TIMEOUT, DIMSE_TIMEOUT, NETWORK_TIMEOUT = 30.0, 300.0, 300.0
#: Presentation contexts an association may propose (PS3.8: context ids are odd, 1 to 255).
MAX_CONTEXTS = 128
#: SOP Instance UIDs asked for in one C-GET or C-MOVE request.
UIDS_PER_REQUEST = 200
#: Pending C-FIND statuses (a match follows); 0x0000 ends the answers.
_PENDING = (0xFF00, 0xFF01)
#: C-STORE statuses our side answers with.
_STORED, _OUT_OF_RESOURCES, _NOT_ASKED_FOR = 0x0000, 0xA700, 0xC000


class FetchError(PseudoError):
    """The PACS cannot be used: it does not answer, refuses the association, or ends it."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.UNAVAILABLE) -> None:
        super().__init__(message)
        self.kind = kind


class FindFailed(PseudoError):
    """The PACS answered one C-FIND with a failure status (the others may still work)."""


@dataclass(frozen=True)
class Instance:
    """An instance the PACS holds, as C-FIND names it."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str


#: Receives an instance as it arrived (SOP Instance UID, the file's bytes); False if it could
#: not be kept (the PACS is then told that this sub-operation failed).
Sink = Callable[[str, bytes], bool]


class _Handshake:
    """What happened while an association was asked for: was there a connection, an answer."""

    def __init__(self) -> None:
        self.connected = False
        self.answer: Any = None

    def handlers(self) -> list[tuple[evt.EventType, Callable[..., Any]]]:
        """The pynetdicom event handlers that record it."""
        return [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_ACSE_RECV, self._received)]

    def _opened(self, event: evt.Event) -> None:
        self.connected = True

    def _received(self, event: evt.Event) -> None:
        primitive = getattr(event, "primitive", None)
        if getattr(primitive, "result", None) is not None and self.answer is None:
            self.answer = primitive

    def failure(self, peer: Peer, calling: str, service: str) -> FetchError:
        """Why the association with ``peer`` was not established, as one line."""
        if not self.connected:
            return FetchError(f"{peer}: nothing answers at {peer.host} port {peer.port}")
        answer = self.answer
        if answer is not None and answer.result in (1, 2):
            permanent = answer.result == 1
            return FetchError(
                f"{peer}: the association was rejected ({answer.reason_str.lower()}); "
                f"the PACS must know the calling AE title {calling} and this host",
                ErrorKind.USAGE if permanent else ErrorKind.UNAVAILABLE,
            )
        if answer is not None:
            return FetchError(f"{peer}: does not offer {service}", ErrorKind.USAGE)
        return FetchError(f"{peer}: did not answer the association request")


def _associate(
    ae: AE,
    peer: Peer,
    service: str,
    roles: Sequence[Any] = (),
    handlers: Sequence[tuple[evt.EventType, Callable[..., Any]]] = (),
) -> Association:
    """An established association with ``peer``; :class:`FetchError` saying why not."""
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = (
        ACSE_TIMEOUT,
        DIMSE_TIMEOUT,
        NETWORK_TIMEOUT,
    )
    seen = _Handshake()
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        ext_neg=list(roles) or None,
        evt_handlers=[*seen.handlers(), *handlers],
    )
    if not assoc.is_established:
        raise seen.failure(peer, ae.ae_title, service)
    return assoc


def _ended(peer: Peer, what: str) -> FetchError:
    return FetchError(
        f"{peer}: the association ended during {what}; what arrived is kept: run the same "
        "command again to go on"
    )


def _require(assoc: Association, peer: Peer, model: str, service: str, hint: str = "") -> None:
    """Stop with one line when the PACS accepted the association but not ``model``."""
    if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
        assoc.release()
        raise FetchError(f"{peer}: does not offer {service}{hint}", ErrorKind.USAGE)


class Finder:
    """One association for the C-FINDs of a fetch: studies by accession number, then their
    series and instances."""

    def __init__(self, peer: Peer, calling: str) -> None:
        self.peer = peer
        self.calling = calling
        self._assoc: Association | None = None

    def __enter__(self) -> Finder:
        ae = AE(ae_title=self.calling)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        self._assoc = _associate(ae, self.peer, "C-FIND (Study Root)")
        _require(
            self._assoc,
            self.peer,
            StudyRootQueryRetrieveInformationModelFind,
            "C-FIND (Study Root)",
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()

    def _find(self, query: Dataset) -> Iterator[Dataset]:
        assert self._assoc is not None, "use Finder as a context manager"
        for status, identifier in self._assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            code = getattr(status, "Status", None)
            if code is None:
                raise _ended(self.peer, "a C-FIND")
            if code in _PENDING and identifier is not None:
                yield identifier
            elif code not in _PENDING and code != 0:
                raise FindFailed(f"the PACS answered the C-FIND with status 0x{code:04X}")

    def studies(self, accession: str) -> list[str]:
        """The Study Instance UIDs of the studies with this accession number."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.AccessionNumber = accession
        query.StudyInstanceUID = ""
        found = [str(match.get("StudyInstanceUID", "")) for match in self._find(query)]
        return sorted({uid for uid in found if uid})

    def instances(self, study_uid: str) -> list[Instance]:
        """Every instance of a study, series by series."""
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""
        series = sorted({str(m.get("SeriesInstanceUID", "")) for m in self._find(query)} - {""})
        found: dict[str, Instance] = {}
        for series_uid in series:
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = study_uid
            query.SeriesInstanceUID = series_uid
            query.SOPInstanceUID = ""
            query.SOPClassUID = ""
            for match in self._find(query):
                uid = str(match.get("SOPInstanceUID", ""))
                if uid:
                    found[uid] = Instance(
                        study_uid, series_uid, str(match.get("SOPClassUID", "")), uid
                    )
        return sorted(found.values(), key=lambda i: (i.series_uid, i.sop_instance_uid))


class _Receiver:
    """The C-STORE side of a retrieval: takes the instances asked for, refuses the others."""

    def __init__(self, expected: set[str], sink: Sink) -> None:
        self.expected = expected
        self.sink = sink
        self.received: set[str] = set()

    def handle(self, event: evt.Event) -> int:
        """Keep one instance (pynetdicom's ``EVT_C_STORE``)."""
        uid = str(getattr(event.request, "AffectedSOPInstanceUID", ""))
        if uid not in self.expected:
            return _NOT_ASKED_FOR
        if uid in self.received:
            return _STORED  # sent twice: kept once
        if not self.sink(uid, event.encoded_dataset()):
            return _OUT_OF_RESOURCES
        self.received.add(uid)
        return _STORED


def _requests(instances: Sequence[Instance]) -> Iterator[Dataset]:
    """IMAGE-level identifiers naming ``instances``, series by series, a few hundred each."""
    by_series = groupby(
        sorted(instances, key=lambda i: (i.study_uid, i.series_uid)),
        key=lambda i: (i.study_uid, i.series_uid),
    )
    for (study_uid, series_uid), members in by_series:
        uids = [i.sop_instance_uid for i in members]
        for start in range(0, len(uids), UIDS_PER_REQUEST):
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = study_uid
            query.SeriesInstanceUID = series_uid
            chunk = uids[start : start + UIDS_PER_REQUEST]
            query.SOPInstanceUID = chunk if len(chunk) > 1 else chunk[0]
            yield query


def _check_retrieval(peer: Peer, what: str, responses: Iterator[tuple[Dataset, Any]]) -> None:
    """Read a C-GET's or C-MOVE's responses to the end; the PACS's own counts are not trusted
    (what arrived is counted as it arrives), but an association that ends is an error."""
    for status, _identifier in responses:
        if getattr(status, "Status", None) is None:
            raise _ended(peer, what)


def get_instances(peer: Peer, calling: str, instances: Sequence[Instance], sink: Sink) -> set[str]:
    """Retrieve ``instances`` by C-GET into ``sink``; the SOP Instance UIDs that arrived.

    Each storage class is offered in every transfer syntax, one presentation context each, so
    that the PACS sends an instance as it holds it (it would convert it otherwise); the
    classes are shared among as many associations as the 128 contexts of one require.
    """
    receiver = _Receiver({i.sop_instance_uid for i in instances}, sink)
    classes = sorted({i.sop_class_uid for i in instances})
    per_association = max(1, (MAX_CONTEXTS - 1) // len(ALL_TRANSFER_SYNTAXES))
    for start in range(0, len(classes), per_association):
        chunk = set(classes[start : start + per_association])
        ae = AE(ae_title=calling)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for sop_class in sorted(chunk):
            for syntax in ALL_TRANSFER_SYNTAXES:
                ae.add_requested_context(sop_class, syntax)
        roles = [build_role(sop_class, scp_role=True) for sop_class in sorted(chunk)]
        assoc = _associate(
            ae,
            peer,
            "C-GET (Study Root)",
            roles,
            [(evt.EVT_C_STORE, receiver.handle)],
        )
        _require(
            assoc,
            peer,
            StudyRootQueryRetrieveInformationModelGet,
            "C-GET (Study Root)",
            " (--move-to retrieves by C-MOVE)",
        )
        try:
            for query in _requests([i for i in instances if i.sop_class_uid in chunk]):
                _check_retrieval(
                    peer,
                    "a C-GET",
                    assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet),
                )
        finally:
            if assoc.is_established:
                assoc.release()
    return receiver.received


def move_instances(
    peer: Peer, calling: str, destination: Peer, instances: Sequence[Instance], sink: Sink
) -> set[str]:
    """Retrieve ``instances`` by C-MOVE to a storage SCP of ours that listens at
    ``destination`` (address, port and the AE title the PACS knows it by) only while this
    runs, and takes instances from the PACS's AE title only; the SOP Instance UIDs that
    arrived."""
    receiver = _Receiver({i.sop_instance_uid for i in instances}, sink)
    scp = AE(ae_title=destination.ae_title)
    scp.require_calling_aet = [peer.ae_title]
    scp.supported_contexts = [
        build_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        for cx in StoragePresentationContexts
    ]
    scp.acse_timeout, scp.dimse_timeout, scp.network_timeout = (
        ACSE_TIMEOUT,
        DIMSE_TIMEOUT,
        NETWORK_TIMEOUT,
    )
    try:
        server = scp.start_server(
            (destination.host, destination.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, receiver.handle)],
        )
    except OSError as exc:
        raise FetchError(
            f"--move-to {destination}: cannot listen there ({exc.strerror})", ErrorKind.USAGE
        ) from exc
    assert server is not None
    try:
        ae = AE(ae_title=calling)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = _associate(ae, peer, "C-MOVE (Study Root)")
        _require(assoc, peer, StudyRootQueryRetrieveInformationModelMove, "C-MOVE (Study Root)")
        try:
            for query in _requests(instances):
                _check_retrieval(
                    peer,
                    "a C-MOVE",
                    assoc.send_c_move(
                        query, destination.ae_title, StudyRootQueryRetrieveInformationModelMove
                    ),
                )
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        server.shutdown()
    return receiver.received
