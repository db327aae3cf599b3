"""Cryptographic building blocks, all from the ``cryptography`` library.

Nothing here invents a cipher: passphrases are stretched with scrypt, keys are derived with
HKDF-SHA256, secrets are wrapped with AES-256-GCM, records are sealed to an X25519 public key
(ephemeral X25519 + HKDF + AES-256-GCM) and reversible tokens use AES-SIV. Every blob carries a
version byte so that formats can evolve, and every failure surfaces as one exception type.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import time
import unicodedata
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from keystore.errors import InvalidTokenError

SEAL_VERSION = 1
_SEAL_INFO = b"pseudo/v1/seal"
#: HKDF label of the re-identifiers' Ed25519 signing key, derived from the project's X25519
#: re-identification private key (so every re-identification slot holds it, no operator does).
REID_SIGNING_LABEL = "pseudo/v1/reid-signing"
_NONCE_LEN = 12
_X25519_LEN = 32


@dataclass(frozen=True)
class ScryptParams:
    """Cost parameters of scrypt, stored beside every key slot so they can be raised later."""

    n: int = 2**16
    r: int = 8
    p: int = 1

    def validate(self) -> None:
        """Refuse parameters that are too cheap to slow guessing, or absurdly expensive.

        The upper bounds (n <= 2**22, r <= 32, p <= 16) keep a tampered vault file from making
        an unlock allocate gigabytes.
        """
        if self.n < 2**14 or self.n > 2**22 or self.n & (self.n - 1):
            raise ValueError("scrypt n must be a power of two from 2**14 to 2**22")
        if not 8 <= self.r <= 32 or not 1 <= self.p <= 16:
            raise ValueError("scrypt r must be 8..32 and p 1..16")

    def to_json(self) -> dict[str, int]:
        """The parameters as stored beside a key slot."""
        return {"n": self.n, "r": self.r, "p": self.p}


def time_kdf(params: ScryptParams, rounds: int = 3) -> float:
    """Seconds one passphrase guess costs with ``params`` on this machine (best of ``rounds``)."""
    params.validate()
    best = float("inf")
    for _ in range(max(1, rounds)):
        start = time.perf_counter()
        derive_kek("a passphrase to time", b"\x00" * 16, params)
        best = min(best, time.perf_counter() - start)
    return best


def fingerprint(public_key: bytes) -> str:
    """A short, non-secret name of a public key for the audit log (16 hex digits of SHA-256)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def normalize_passphrase(passphrase: str) -> bytes:
    """Return the UTF-8 bytes of a passphrase in Unicode NFC form.

    The same passphrase typed on two keyboards can arrive composed or decomposed; NFC makes
    both unlock the same slot.
    """
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def derive_kek(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    """Stretch a passphrase into a 256-bit key-encryption key with scrypt (or take the key
    that :func:`derive_kek_soon` derived for the same inputs)."""
    with _SOON_LOCK:
        soon = _SOON.pop((passphrase, salt, params), None)
    if soon is not None:
        return soon.result()
    return _scrypt(passphrase, salt, params)


def _scrypt(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=params.n, r=params.r, p=params.p)
    return kdf.derive(normalize_passphrase(passphrase))


#: Keys being derived in the background, by (passphrase, salt, parameters); each is taken out
#: by the one :func:`derive_kek` call it was derived for.
_SOON: dict[tuple[str, bytes, ScryptParams], Future[bytes]] = {}
_SOON_LOCK = threading.Lock()


def derive_kek_soon(passphrase: str, slots: Sequence[tuple[bytes, ScryptParams]]) -> None:
    """Start deriving the keys of ``slots`` (salt, parameters) from ``passphrase`` on a
    background thread, one after the other, for :func:`derive_kek` to take when it is asked.

    scrypt runs outside Python's interpreter lock, so a command can go on loading meanwhile:
    an unlock costs no time of its own. Nothing is revealed before it is asked for, so a
    passphrase guard still decides whether and when an attempt is made.
    """
    soon: dict[tuple[str, bytes, ScryptParams], Future[bytes]] = {
        (passphrase, salt, params): Future() for salt, params in slots
    }
    with _SOON_LOCK:
        _SOON.update(soon)

    def derive() -> None:
        for (text, salt, params), future in soon.items():
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(_scrypt(text, salt, params))
                except BaseException as exc:  # handed to the caller of derive_kek
                    future.set_exception(exc)

    threading.Thread(target=derive, name="pseudo-unlock", daemon=True).start()


def hkdf(secret: bytes, label: str, length: int = 32) -> bytes:
    """Derive a sub-key from ``secret`` for the purpose named by ``label`` (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode()).derive(
        secret
    )


def random_bytes(n: int) -> bytes:
    """Return ``n`` bytes from the operating system's CSPRNG."""
    return os.urandom(n)


def wrap(kek: bytes, secret: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """Encrypt ``secret`` under ``kek`` with AES-256-GCM; return ``(nonce, ciphertext)``."""
    nonce = random_bytes(_NONCE_LEN)
    return nonce, AESGCM(kek).encrypt(nonce, secret, aad)


def unwrap(kek: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Decrypt a wrapped secret; raise :class:`InvalidTokenError` if the key or data is wrong."""
    try:
        return AESGCM(kek).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise InvalidTokenError("wrapped key does not open with this key") from exc


def encode_parts(*parts: str | bytes) -> bytes:
    """Encode several values into one unambiguous byte string (length-prefixed).

    ``("ab", "c")`` and ``("a", "bc")`` give different bytes, which a plain join would not.
    """
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


def mac(key: bytes, *parts: str | bytes) -> bytes:
    """HMAC-SHA256 of the length-prefixed encoding of ``parts``."""
    return hmac.new(key, encode_parts(*parts), hashlib.sha256).digest()


def generate_x25519() -> tuple[bytes, bytes]:
    """Create an X25519 key pair; return ``(private_raw, public_raw)``."""
    private = X25519PrivateKey.generate()
    return _private_raw(private), _public_raw(private.public_key())


def public_from_private(private_raw: bytes) -> bytes:
    """Return the raw public key that belongs to a raw X25519 private key."""
    return _public_raw(X25519PrivateKey.from_private_bytes(private_raw).public_key())


def _private_raw(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _public_raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _seal_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_public + recipient_public,
        info=_SEAL_INFO,
    ).derive(shared)


def seal(recipient_public: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` so that only the holder of the matching private key can read it.

    Format: ``version (1) | ephemeral public key (32) | nonce (12) | AES-GCM ciphertext``.
    ``aad`` (for linkage records: project, table and pseudonym) is authenticated, so a sealed
    record moved to another row no longer opens.
    """
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = _public_raw(ephemeral.public_key())
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    key = _seal_key(shared, ephemeral_public, recipient_public)
    nonce = random_bytes(_NONCE_LEN)
    body = AESGCM(key).encrypt(nonce, plaintext, aad)
    return bytes([SEAL_VERSION]) + ephemeral_public + nonce + body


def open_sealed(recipient_private: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a blob made by :func:`seal`; raise :class:`InvalidTokenError` on any problem."""
    header = 1 + _X25519_LEN + _NONCE_LEN
    if len(blob) < header + 16 or blob[0] != SEAL_VERSION:
        raise InvalidTokenError("sealed record has an unknown format")
    ephemeral_public = blob[1 : 1 + _X25519_LEN]
    nonce = blob[1 + _X25519_LEN : header]
    private = X25519PrivateKey.from_private_bytes(recipient_private)
    recipient_public = _public_raw(private.public_key())
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        key = _seal_key(shared, ephemeral_public, recipient_public)
        return AESGCM(key).decrypt(nonce, blob[header:], aad)
    except (InvalidTag, ValueError) as exc:
        raise InvalidTokenError("sealed record does not open with this key") from exc


def siv_encrypt(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Deterministic authenticated encryption (AES-SIV): same input, same output."""
    return AESSIV(key).encrypt(plaintext, [context])


def siv_decrypt(key: bytes, ciphertext: bytes, context: bytes) -> bytes:
    """Reverse :func:`siv_encrypt`; raise :class:`InvalidTokenError` if it does not verify."""
    try:
        return AESSIV(key).decrypt(ciphertext, [context])
    except (InvalidTag, ValueError) as exc:
        raise InvalidTokenError("token does not decrypt with this project's key") from exc


def reid_signing_key(reid_private: bytes) -> bytes:
    """The Ed25519 signing key (32-byte seed) of the holders of a re-identification private key.

    Derived with HKDF (its own label) from the X25519 private key, which only re-identification
    slots hold: whoever can sign can open the linkage records, and nobody else can sign.
    """
    return hkdf(reid_private, REID_SIGNING_LABEL)


def ed25519_public(seed: bytes) -> bytes:
    """The raw Ed25519 public key of a 32-byte signing key."""
    return (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def sign(seed: bytes, *parts: str | bytes) -> bytes:
    """Ed25519 signature of the length-prefixed encoding of ``parts``."""
    return Ed25519PrivateKey.from_private_bytes(seed).sign(encode_parts(*parts))


def verify_signature(public_key: bytes, signature: bytes, *parts: str | bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``parts``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, encode_parts(*parts))
    except (InvalidSignature, ValueError):
        return False
    return True
