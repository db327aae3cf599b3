"""A bound on what a deflated file inflates to, checked before pydicom inflates it.

A file in the Deflated Explicit VR Little Endian transfer syntax is compressed as a whole, and
pydicom inflates it in one piece: 1 MB of zeros inflates to 1 GiB. Before pydicom reads such a
file, its data set is inflated here chunk by chunk and thrown away, counting the bytes; a file
that inflates beyond :func:`max_inflated` is refused (quarantined with the reason) without
ever holding more than one chunk.

The bound is ``PSEUDO_MAX_INFLATED_MB`` megabytes (default 256, see docs/hardening.md).
"""

from __future__ import annotations

import os
import zlib
from typing import BinaryIO

from pydicom.uid import DeflatedExplicitVRLittleEndian

from pseudo.findings import RejectedFile

#: Default bound on the inflated size of a deflated data set, in MiB.
DEFAULT_MAX_INFLATED_MB = 256
_CHUNK = 1024 * 1024
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})  # fmt: skip
_DEFLATED = DeflatedExplicitVRLittleEndian.encode()


def max_inflated() -> int:
    """The bound in bytes: ``PSEUDO_MAX_INFLATED_MB`` (a positive integer) or the default."""
    text = os.environ.get("PSEUDO_MAX_INFLATED_MB", "").strip()
    megabytes = int(text) if text.isdigit() and int(text) > 0 else DEFAULT_MAX_INFLATED_MB
    return megabytes * 1024 * 1024


def deflated_start(handle: BinaryIO, meta_start: int) -> int | None:
    """Where the deflated data set begins, if the file meta (explicit VR little endian,
    starting at ``meta_start``) names the deflated transfer syntax; else None."""
    handle.seek(meta_start)
    position, deflated = meta_start, False
    while True:
        head = handle.read(8)
        if len(head) < 8 or int.from_bytes(head[0:2], "little") != 0x0002:
            break
        element = int.from_bytes(head[2:4], "little")
        if head[4:6] in _LONG_VRS:
            rest = handle.read(4)
            if len(rest) < 4:
                break
            length, header = int.from_bytes(rest, "little"), 12
        else:
            length, header = int.from_bytes(head[6:8], "little"), 8
        if element == 0x0010:
            deflated = handle.read(length).rstrip(b"\0 ") == _DEFLATED
        position += header + length
        handle.seek(position)
    return position if deflated else None


def check_inflated_size(handle: BinaryIO, start: int, limit: int | None = None) -> int:
    """Inflate the deflated stream from ``start`` to its end, holding one chunk at a time;
    return its inflated size, or raise :class:`RejectedFile` beyond ``limit`` bytes."""
    limit = max_inflated() if limit is None else limit
    handle.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    pending = b""
    while True:
        if not pending:
            pending = handle.read(_CHUNK)
            if not pending:
                break
        try:
            out = inflater.decompress(pending, _CHUNK)
        except zlib.error:
            return total  # corrupt: pydicom's reader gives the reason
        total += len(out)
        if total > limit:
            raise RejectedFile(
                f"the deflated data set inflates beyond {limit // (1024 * 1024)} MB "
                "(PSEUDO_MAX_INFLATED_MB): refused as a possible decompression bomb"
            )
        pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    return total
