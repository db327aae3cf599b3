"""A DICOM network peer as the command line names it: ``HOST:PORT:AET``."""

from __future__ import annotations

from dataclasses import dataclass

#: An Application Entity title: 1 to 16 characters of the default repertoire, no backslash.
AE_TITLE_MAX = 16


class PeerError(ValueError):
    """A peer given on the command line that cannot be used, with the reason."""


@dataclass(frozen=True)
class Peer:
    """Where a DICOM peer listens and the AE title it answers to."""

    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:{self.ae_title}"


def parse_peer(text: str) -> Peer:
    """Read ``HOST:PORT:AET`` (an IPv6 host in brackets: ``[::1]:104:PACS``); raise
    :class:`PeerError` saying what is wrong."""
    host, sep, rest = text.rpartition(":")
    if not sep:
        raise PeerError(f"{text!r}: expected HOST:PORT:AET")
    ae_title = rest
    host, sep, port_text = host.rpartition(":")
    if not sep or not host or not port_text:
        raise PeerError(f"{text!r}: expected HOST:PORT:AET")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise PeerError(f"{text!r}: the port must be a number from 1 to 65535")
    if not 0 < len(ae_title) <= AE_TITLE_MAX or "\\" in ae_title or not ae_title.isprintable():
        raise PeerError(
            f"{text!r}: the AE title must be 1 to {AE_TITLE_MAX} printable characters, no backslash"
        )
    return Peer(host, int(port_text), ae_title)
