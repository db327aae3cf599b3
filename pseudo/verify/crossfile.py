"""Checks across the files of a run: no original instance UID of any input in any output, and
every reference that pointed at an input instance points at an output one."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from pydicom.dataelem import RawDataElement

from pseudo.deid.uids import is_standard_uid
from pseudo.io.pydicom_internals import element_at
from pseudo.policy.compiled import CompiledPolicy
from pseudo.verify.elements import Walked, path_of, peek, strings
from pseudo.verify.finding import VerificationFinding
from pseudo.verify.recording import KEEPING, REFERENCE_TAGS


@functools.lru_cache(maxsize=4096)
def uid_digest(uid: str) -> int:
    """A compact, stable stand-in for a UID, so a whole run's UIDs fit in memory (worked out
    once per process for the UIDs a study's files share)."""
    return int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "big")


def references(walked: list[Walked]) -> list[tuple[str, str]]:
    """(path, value) of every Referenced SOP Instance UID inside sequences, at any depth."""
    found: list[tuple[str, str]] = []
    for level, tag, vr, parents in walked:
        if parents and tag in REFERENCE_TAGS:
            # as read, not converted in place: the output is written already
            found.extend((path_of(parents, tag), uid) for uid in strings(peek(level, tag, vr)))
    return found


def output_uids(
    walked: list[Walked], policy: CompiledPolicy, active: frozenset[int]
) -> dict[int, str]:
    """Digest -> path of every UID among the elements of an output (see
    :func:`pseudo.verify.elements.elements`) that the policy does not keep as it is."""
    found: dict[int, str] = {}
    for level, tag, vr, parents in walked:
        if vr == "UI" and policy.decide(tag, vr, level, parents, active).action not in KEEPING:
            element = element_at(level, tag)
            held = element.value if element.__class__ is RawDataElement else None
            if held.__class__ is bytes and held.isascii():
                # as read, without the data set's encodings (a UID is ASCII): raw_value() inlined
                uids = held.decode("ascii").strip(" \x00").split("\\")
            else:
                uids = strings(peek(level, tag, vr))  # as read: not converted in place
            for uid in uids:
                if uid and (digest := _instance_digest(uid)) is not None and digest not in found:
                    found[digest] = path_of(parents, tag)
    return found


@functools.lru_cache(maxsize=4096)
def _instance_digest(uid: str) -> int | None:
    """:func:`uid_digest` of an instance UID, None for a standard one (one look-up for both)."""
    return None if is_standard_uid(uid) else uid_digest(uid)


@dataclass
class PairEvidence:
    """What one pseudonymized file contributes to the cross-file checks."""

    input_instance: str
    output_instance: str
    references: list[tuple[str, str, str]]  # (path, original value, output value)
    original_uids: set[int] = field(default_factory=set)  # digests of the input's instance UIDs
    output_uids: dict[int, str] = field(default_factory=dict)  # digest -> path, in the output


@dataclass
class CrossFileCheck:
    """Checks across all outputs of a run: no original instance UID of any input appears in any
    output, and every reference that pointed at an input instance points at an output one."""

    input_instances: set[str] = field(default_factory=set)
    output_instances: set[str] = field(default_factory=set)
    pending: list[tuple[str, str, str, str]] = field(default_factory=list)
    original_uids: set[int] = field(default_factory=set)
    output_uids: dict[int, tuple[str, str]] = field(default_factory=dict)

    def add(self, evidence: PairEvidence, relative_path: str) -> None:
        """Record one input/output pair."""
        self.input_instances.add(evidence.input_instance)
        self.output_instances.add(evidence.output_instance)
        self.pending.extend((relative_path, *ref) for ref in evidence.references)
        self.original_uids |= evidence.original_uids
        for digest, path in evidence.output_uids.items():
            self.output_uids.setdefault(digest, (relative_path, path))

    def findings(self, *, show_values: bool = False) -> list[VerificationFinding]:
        """Original UIDs found in outputs, and references that no longer resolve."""
        leaked = [
            VerificationFinding(output, path, "leak", "instance UID", "leak")
            for digest, (output, path) in self.output_uids.items()
            if digest in self.original_uids
        ]
        broken = [
            VerificationFinding(
                output,
                path,
                "reference",
                "reference that does not resolve",
                "leak",
                value if show_values else None,
            )
            for output, path, original, value in self.pending
            if original in self.input_instances and value not in self.output_instances
        ]
        return leaked + broken
