"""TCP settings of the node's connections."""

from __future__ import annotations

import contextlib
import socket

from pynetdicom import evt


def no_delay(event: evt.Event) -> None:
    """Send each PDU at once (``TCP_NODELAY``): a C-STORE is several PDUs, and Nagle's
    algorithm holds the last one back until the peer acknowledges the first, which a peer
    delays by up to 40 ms; that wait, not the work, would set the rate of instances."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # a connection already gone: nothing to tune
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
