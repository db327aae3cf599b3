"""Who may talk to the node: the allow-list of calling AE titles (and addresses), and TLS."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pseudo.errors import PseudoError
from pseudo.serve.peer import AE_TITLE_MAX


class AccessError(PseudoError):
    """An allow-list entry or a TLS file that cannot be used."""


@dataclass(frozen=True)
class Allowed:
    """One ``--allow`` entry: a calling AE title, from one address or any (None)."""

    ae_title: str
    address: str | None = None

    def admits(self, ae_title: str, address: str) -> bool:
        """Whether a peer calling as ``ae_title`` from ``address`` matches this entry."""
        if ae_title.strip() != self.ae_title:
            return False
        return self.address is None or _same_address(self.address, address)


def _same_address(allowed: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(allowed) == ipaddress.ip_address(address)
    except ValueError:
        return allowed == address


def parse_allowed(text: str) -> Allowed:
    """Read ``AET`` or ``AET@ADDRESS`` (a host name is resolved once, here)."""
    ae_title, sep, address = text.partition("@")
    ae_title = ae_title.strip()
    if not 0 < len(ae_title) <= AE_TITLE_MAX or "\\" in ae_title or not ae_title.isprintable():
        raise AccessError(
            f"--allow {text!r}: the AE title must be 1 to {AE_TITLE_MAX} printable characters"
        )
    if not sep:
        return Allowed(ae_title)
    address = address.strip("[]")
    if not address:
        raise AccessError(f"--allow {text!r}: expected AET or AET@ADDRESS")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        try:
            address = socket.gethostbyname(address)
        except OSError as exc:
            raise AccessError(f"--allow {text!r}: cannot resolve {address!r}") from exc
    return Allowed(ae_title, address)


@dataclass(frozen=True)
class AllowList:
    """The peers that may associate; an empty list admits no one (the node refuses to start)."""

    entries: tuple[Allowed, ...]

    def admits(self, ae_title: str, address: str) -> bool:
        """Whether a peer calling as ``ae_title`` from ``address`` may associate."""
        return any(entry.admits(ae_title, address) for entry in self.entries)


def tls_context(
    cert: Path, key: Path, ca: Path, on_refused: Callable[[str], None]
) -> ssl.SSLContext:
    """A server TLS context that requires a client certificate signed by ``ca``;
    ``on_refused(reason)`` is told of each connection refused in the handshake."""
    context = _CountingContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.on_refused = on_refused
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise AccessError(f"--tls-cert {cert} / --tls-key {key}: cannot load ({exc})") from exc
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise AccessError(f"--tls-ca {ca}: cannot load ({exc})") from exc
    return context


class _CountingContext(ssl.SSLContext):
    """An SSL context that reports each handshake it refuses (pynetdicom wraps each accepted
    socket with it; a refused one never becomes an association, so it is counted here)."""

    on_refused: Callable[[str], None]

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        """Wrap ``sock``; report a failed handshake, then raise as usual."""
        try:
            peer = str(sock.getpeername()[0])
        except OSError:
            peer = "?"
        try:
            return super().wrap_socket(sock, *args, **kwargs)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.__class__.__name__
            self.on_refused(f"TLS handshake from {peer} refused ({reason})")
            raise
