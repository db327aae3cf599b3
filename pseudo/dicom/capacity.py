"""What a value of each VR can hold: maximum lengths, and the length of the keyed tokens
pseudo writes into them (a reversible token is an AES-SIV ciphertext, 16 bytes longer than
its plaintext, in base32: see :mod:`pseudo.deid.tokens`)."""

from __future__ import annotations

import math

#: Maximum value length per VR (PS3.5 Table 6.2-1); None means unlimited.
MAX_LENGTH: dict[str, int | None] = {
    "AE": 16,
    "CS": 16,
    "SH": 16,
    "LO": 64,
    "PN": 64,
    "ST": 1024,
    "LT": 10240,
    "UC": None,
    "UT": None,
}
#: VRs that can hold a token.
TOKEN_VRS = frozenset(MAX_LENGTH)


def reversible_length(plaintext_bytes: int) -> int:
    """Characters of a reversible token for a plaintext of ``plaintext_bytes`` bytes."""
    return math.ceil((16 + plaintext_bytes) * 8 / 5)


def max_reversible_input(vr: str) -> int | None:
    """The longest plaintext (in bytes) whose reversible token fits ``vr``; None if unlimited."""
    limit = MAX_LENGTH.get(vr)
    if limit is None:
        return None
    return max(-1, math.floor(limit * 5 / 8) - 16)
