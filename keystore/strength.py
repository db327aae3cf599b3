"""How strong a new passphrase is, and whether two passphrases are too much alike.

A rough estimate in the manner of zxcvbn, kept small: the passphrase is cut into the pieces a
guesser would try (common passwords from ``data/common-passwords.txt``, also spelt with
digits for letters; runs of one character; keyboard-free sequences such as ``abcd`` or
``4321``; single characters) and the cheapest cut gives the estimated number of guesses, as a
power of two. Nothing here is a cipher: it only decides which passphrases are refused.
"""

from __future__ import annotations

import functools
import itertools
import math
import unicodedata
from importlib import resources

#: Fewer characters than this are refused outright.
MIN_LENGTH = 12
#: An estimate below this many bits (2**40 guesses: some 7,000 years at 0.2 s a guess on one
#: core) is refused.
MIN_BITS = 40.0
#: Two passphrases closer than this (edit distance over the longer length) are "near-identical".
NEAR_RATIO = 0.3

_LEET = str.maketrans({"@": "a", "4": "a", "0": "o", "$": "s", "5": "s", "3": "e", "7": "t"})
_LEET_I = str.maketrans({"1": "i", "!": "i"})
_LEET_L = str.maketrans({"1": "l", "!": "l"})


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower case)."""
    text = resources.files("keystore").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _char_bits(char: str) -> float:
    if char.isdigit():
        return math.log2(10)
    if char.isalpha():
        return math.log2(26)
    return math.log2(33)


def _word_variants(piece: str) -> set[str]:
    lower = piece.lower()
    leet = lower.translate(_LEET)
    return {lower, leet.translate(_LEET_I), leet.translate(_LEET_L)}


def _is_sequence(piece: str) -> bool:
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(piece)}
    return len(steps) == 1 and steps <= {-1, 0, 1}


def estimate_bits(passphrase: str) -> float:
    """log2 of the estimated number of guesses a guesser needs for ``passphrase``."""
    text = unicodedata.normalize("NFC", passphrase)
    words = common_passwords()
    rank_bits = math.log2(max(2, len(words)))
    cost = [0.0] + [math.inf] * len(text)
    for end in range(1, len(text) + 1):
        best = cost[end - 1] + _char_bits(text[end - 1])
        for start in range(max(0, end - 40), end - 2):
            piece = text[start:end]
            if _is_sequence(piece):
                best = min(best, cost[start] + math.log2(26 * len(piece)))
            if _word_variants(piece) & words:
                capitals = 1.0 if any(c.isupper() for c in piece) else 0.0
                best = min(best, cost[start] + rank_bits + capitals)
        cost[end] = best
    return cost[-1]


def weakness(passphrase: str) -> str | None:
    """Why ``passphrase`` is too weak for a new key slot, or None if it is strong enough."""
    if len(passphrase) < MIN_LENGTH:
        return f"at least {MIN_LENGTH} characters are required"
    folded = passphrase.strip().lower()
    if folded in common_passwords() or _word_variants(folded) & common_passwords():
        return "it is a common password"
    bits = estimate_bits(passphrase)
    if bits < MIN_BITS:
        return (
            f"too easy to guess (about 2^{bits:.0f} guesses, at least 2^{MIN_BITS:.0f} are "
            "required): use several unrelated words, not common passwords, runs or sequences"
        )
    return None


def _normalized(passphrase: str) -> str:
    return "".join(unicodedata.normalize("NFC", passphrase).casefold().split())


def _distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def near_identical(first: str, second: str) -> bool:
    """True when two passphrases differ only by case, spaces, or a few characters (less than
    30 % of the longer one), or one contains the other."""
    a, b = _normalized(first), _normalized(second)
    if not a or not b:
        return a == b
    if a in b or b in a:
        return True
    return _distance(a, b) < NEAR_RATIO * max(len(a), len(b))
