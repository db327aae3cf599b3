"""The check of one output: its bytes, then (only when something is found there) its
attributes at every depth, its file name and its Burned In Annotation.

:func:`check` searches an output for the needles of a :class:`~pseudo.verify.matching.Matcher`:
first its raw bytes (one pass, by words), and, only when something is found there, every
attribute at every depth, to name where. It also flags private attributes the policy does not
keep, a Burned In Annotation that is not ``NO``, and the file's name. :func:`finish` checks an
output against its own input. Findings name the file, the attribute path and the kind of value,
never the value itself unless asked.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from pseudo.dicom.private import SafePrivate
from pseudo.io.pydicom_internals import character_set, element_at
from pseudo.policy.compiled import CompiledPolicy
from pseudo.policy.model import Action
from pseudo.policy.selectors import Parents
from pseudo.verify.crossfile import PairEvidence, output_uids, references, uid_digest
from pseudo.verify.elements import (
    Walked,
    elements,
    encodings,
    path_of,
    peek,
    raw_value,
    snapshot_of,
    snapshot_text,
    strings,
)
from pseudo.verify.finding import VerificationFinding
from pseudo.verify.matching import Matcher, needle_pattern
from pseudo.verify.needles import Needle
from pseudo.verify.prefilter import output_words
from pseudo.verify.recording import KEEPING, SEARCHED_VRS, KeptValues, Pending

#: Modalities whose images often carry burned-in text: a missing Burned In Annotation is flagged.
BURNED_IN_PRONE = frozenset(
    {"US", "XA", "RF", "SC", "OT", "DX", "CR", "ES", "XC", "IO", "PX", "MG"}
)
#: VRs searched in an output, where a value found in the raw bytes must be given its place.
CHECKED_VRS = SEARCHED_VRS | {"AS", "CS", "DS", "IS", "TM"}
#: Binary VRs: in a standard attribute they hold numbers, pixels, curves or profiles (ICC
#: profiles, LUTs, waveforms, overlays, icons), never text, and are not searched for words.
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
#: Standard binary attributes that do carry text: Encapsulated Document (PDF, CDA).
_BINARY_WITH_TEXT = frozenset({0x00420011})
#: Descriptive values (not identities): found in an attribute the policy keeps, they are the
#: policy's choice, not a leak (an Institution Name TOSHIBA inside a kept Manufacturer
#: TOSHIBA_MEC names the vendor). Names, IDs, dates, UIDs, addresses are reported wherever found.
_DESCRIPTIVE = frozenset({"private value", "text", "free text", "institution"})


def check(
    out: Dataset,
    relative_path: str,
    matcher: Matcher,
    policy: CompiledPolicy,
    header: bytes | None = None,
    *,
    active: frozenset[int] = frozenset(),
    show_values: bool = False,
    walked: list[Walked] | None = None,
    kept: KeptValues | None = None,
    added: frozenset[int] = frozenset(),
    raw_hits: list[tuple[Needle, int]] | None = None,
) -> list[VerificationFinding]:
    """Look for the matcher's needles in one output: its bytes (``header``: every byte but the
    top-level pixel data), its attributes at every depth when needed, and its file name. One
    finding per attribute path and kind of value.

    Text values are searched by whole words; standard binary values (ICC profiles, LUTs,
    waveforms, overlays, icons) are not searched, private and unknown ones are, in their
    printable runs. A needle in an attribute the policy keeps, that the input held at the
    same place (``kept``, from :class:`~pseudo.verify.recording.Recorder`; without it: any
    value the policy keeps), is the policy's choice: a warning for names, IDs, dates and UIDs,
    nothing for descriptive values. Anywhere else it is a leak. The top-level attributes in
    ``added`` hold the project's values (:mod:`pseudo.deid.trial`), never the input's: a
    needle there (a site's sponsor name that is the project's too) is no leak. ``raw_hits``:
    what :meth:`~pseudo.verify.matching.Matcher.search_bytes` found in ``header``, when the
    caller has searched it already: the attributes are searched for those needles only (and
    for those that are not ASCII, found in text regardless of case), since every attribute is
    in the bytes as written; in ISO 2022 bytes or without bytes, for every needle.
    """
    findings: list[VerificationFinding] = []
    reported: set[tuple[str, str, str]] = set()

    def report(
        path: str, check_name: str, kind: str, value: str | None, severity: str = "leak"
    ) -> None:
        if (path, check_name, kind) in reported:
            return
        reported.add((path, check_name, kind))
        findings.append(
            VerificationFinding(
                relative_path, path, check_name, kind, severity, value if show_values else None
            )
        )

    meta = getattr(out, "file_meta", None) or Dataset()
    safe = SafePrivate.load()
    if walked is None:
        walked = elements(out)
    for level, tag, vr, parents in walked:
        if (tag >> 16) & 1 and not 0x10 <= tag & 0xFFFF <= 0xFF:
            decision = policy.decide(tag, vr, level, parents, active)
            action = policy.private_decision(level, tag, decision).action
            if action is Action.REMOVE or (action is Action.CLEAN and not safe.is_safe(level, tag)):
                report(
                    path_of(parents, tag),
                    "private-attribute",
                    "private attribute the policy does not keep",
                    None,
                )
    if raw_hits is None:
        raw_hits = (
            matcher.search_bytes(header, encodings(out)) if header is not None and matcher else []
        )
    chosen: set[str] = set()  # values in which a needle is the policy's choice
    iso_2022 = header is not None and _iso_2022(header)
    if matcher and (header is None or raw_hits or iso_2022):
        # every attribute is in the bytes as written: a needle in one is among the bytes'
        # hits (as are its words), and only those are looked for, to say where they are
        located = matcher
        if header is not None and not iso_2022:
            located = matcher.of({needle for needle, _ in raw_hits})
        seen: set[Needle] = set()
        binary: list[bytes] = []  # standard binary values: not text, not searched
        charsets: dict[int, Any] = {}  # id of a data set -> its encodings
        walked_all = [("FileMeta.", e) for e in elements(meta)] + [("", e) for e in walked]
        for prefix, (level, tag, vr, parents) in walked_all:
            private = bool((tag >> 16) & 1)
            if vr == "SQ" or (vr not in CHECKED_VRS and not private):
                if vr in _BINARY_VRS and tag not in _BINARY_WITH_TEXT and raw_hits:
                    try:
                        value = _value(level, tag, vr, charsets)
                    except Exception:
                        continue
                    if isinstance(value, bytes):
                        binary.append(value)
                elif tag not in _BINARY_WITH_TEXT:
                    continue
            before = element_at(level, tag)  # as written
            if before.__class__ is RawDataElement:
                held = before.value
                if held.__class__ is bytes and not located.may_be_in(held):
                    continue  # no needle there, without decoding the value
            try:
                value = _value(level, tag, vr, charsets, before)
            except Exception:
                continue
            texts = strings(value)
            if isinstance(value, bytes):  # its printable runs, those that may hold a needle
                texts = located.runs_in(value)
            elif (
                len(texts) == 1
                and texts[0].isascii()
                and not located.may_be_in(texts[0].encode("ascii"))
            ):
                continue  # no needle there (e.g. a value the pseudonymizer wrote)
            if not prefix and not parents and tag in added:
                seen.update(needle for text in texts for needle in located.search_text(text))
                continue
            of_itself: dict[Needle, bool] = {}
            for text in texts:
                for needle in located.search_text(text):
                    seen.add(needle)
                    if needle not in of_itself:
                        where: tuple[Dataset, int, str, Parents, frozenset[int]] | None
                        where = (level, tag, vr, parents, active)
                        if prefix and tag == 0x00020003:  # repeats the SOP Instance UID
                            where, before = (out, 0x00080018, "UI", (), active), None
                        elif prefix:  # the rebuilt file meta keeps nothing of the input
                            where = None
                        of_itself[needle] = where is not None and _chosen(
                            needle, located, policy, kept, where, before
                        )
                    path = path_of(parents, tag, prefix)
                    if not of_itself[needle]:
                        report(path, "leak", needle.kind, needle.text)
                        continue
                    chosen.add(text.strip())
                    if needle.kind not in _DESCRIPTIVE:
                        report(path, "kept-value", needle.kind, needle.text, "warning")
        for needle, offset in raw_hits:
            if needle not in seen and not _inside(needle, header or b"", binary):
                report(f"(raw bytes at offset {offset})", "leak", needle.kind, needle.text)
    for part in relative_path.split("/"):
        for needle in matcher.search_text(part):
            stem = part.removesuffix(".dcm")
            if stem in chosen:  # e.g. a UID the policy keeps, which holds a date
                report("(file name)", "kept-value", needle.kind, needle.text, "warning")
            else:
                report("(file name)", "file-name", needle.kind, needle.text)
    burned = _code_string(out, 0x00280301).strip().upper()  # Burned In Annotation
    if burned == "YES":
        report(
            "BurnedInAnnotation",
            "burned-in",
            "Burned In Annotation is YES: text in the pixels",
            None,
        )
    elif burned != "NO" and (burned or _code_string(out, 0x00080060).upper() in BURNED_IN_PRONE):
        report(
            "BurnedInAnnotation",
            "burned-in",
            "Burned In Annotation is not NO: check the pixels",
            None,
            "warning",
        )
    return findings


def _code_string(ds: Dataset, tag: int) -> str:
    """A top-level code string of ``ds`` as text (several values joined by backslashes; empty
    when absent), read as it is: pydicom's keyword look-up and conversion cost more."""
    if element_at(ds, tag) is None:
        return ""
    return "\\".join(strings(peek(ds, tag, "CS")))


def _value(level: Dataset, tag: int, vr: str, charsets: dict[int, Any], element: Any = None) -> Any:
    """The value of an output attribute as ``level[tag].value`` gives it, without converting
    the element in place when it is still raw with an explicit VR (pydicom's conversion and
    bookkeeping cost more than the search; an Implicit VR or UN element is read by pydicom,
    whose dictionaries, private ones included, give its VR). ``charsets`` caches the
    encodings of each data set."""
    if element is None:
        element = element_at(level, tag)
    if element.__class__ is RawDataElement and element.VR not in (None, "UN") and vr != "SQ":
        charset = charsets.get(id(level))
        if charset is None:
            charset = charsets[id(level)] = character_set(level)
        return raw_value(element, element.VR, charset)
    return level[tag].value


def _chosen(
    needle: Needle,
    matcher: Matcher,
    policy: CompiledPolicy,
    kept: KeptValues | None,
    where: tuple[Dataset, int, str, Parents, frozenset[int]],
    before: Any,
) -> bool:
    """Whether a needle found in an output attribute is there by the policy's choice: the
    policy keeps the attribute and (when the input's kept values are known) the input held
    the needle at the same place (``before``: the output's element as written, if known)."""
    level, tag, vr, parents, active = where
    if kept is None:
        decision = policy.decide(tag, vr, level, parents, active)
        return policy.private_decision(level, tag, decision).action in KEEPING
    key = (parents, tag)
    if key not in kept:
        return False
    value = kept[key]
    if before is not None and value == snapshot_of(before):
        return True  # the attribute is as the input had it
    return needle in matcher.search_text(snapshot_text(value))


def _inside(needle: Needle, header: bytes, binary: list[bytes]) -> bool:
    """Whether every occurrence of a needle in the raw bytes is inside a standard binary value
    (an ICC profile's ``tech`` tag is not the operator TECH)."""
    if not binary:
        return False
    pattern = needle_pattern(needle)
    total = len(pattern.findall(header.decode("latin-1")))
    inside = sum(len(pattern.findall(value.decode("latin-1"))) for value in binary)
    return 0 < total <= inside


def finish(
    pending: Pending,
    out: Dataset,
    relative_path: str,
    offset_days: int,
    header: bytes | None,
    policy: CompiledPolicy,
    *,
    show_values: bool = False,
    added: frozenset[int] = frozenset(),
) -> tuple[list[VerificationFinding], PairEvidence]:
    """Check one output against its own input; return findings and cross-file evidence.

    ``header`` is the output's bytes before its pixel data (None for a deflated file);
    ``added``: the top-level attributes that hold the project's values (see :func:`check`).
    """
    walked = elements(out)  # one walk of the output for every check below
    matcher, raw_hits = _matcher(pending, out, relative_path, offset_days, header)
    findings = check(
        out,
        relative_path,
        matcher,
        policy,
        header,
        active=pending.active,
        show_values=show_values,
        walked=walked,
        kept=pending.recorder.kept,
        added=added,
        raw_hits=raw_hits,
    )
    originals = pending.references
    evidence = PairEvidence(
        pending.instance,
        str(out.get("SOPInstanceUID", "")),
        [(path, originals[path], value) for path, value in references(walked) if path in originals],
        set(map(uid_digest, matcher.needles.uids)),
        output_uids(walked, policy, pending.active),
    )
    return findings, evidence


def _iso_2022(header: bytes) -> bool:
    """Whether an output's bytes are text in ISO 2022 (a Specific Character Set of it, and an
    escape): there an escape sequence's last byte is a letter that runs into the next word
    (``ESC ( B`` then ``SMITH`` reads ``BSMITH``), so the words of the bytes are not those of
    the values, and every attribute is searched as decoded. (Binary values hold escape bytes
    too: the character set says whether they are text.)"""
    return b"\x1b" in header and b"ISO 2022" in header


def _matcher(
    pending: Pending, out: Dataset, relative_path: str, offset_days: int, header: bytes | None
) -> tuple[Matcher, list[tuple[Needle, int]] | None]:
    """The needles to check an output for, and what they found in its bytes (None: not
    searched yet). With its bytes: those of the values it may hold (see
    :mod:`~pseudo.verify.prefilter`), which are all that can be found there, in its file name
    or in its attributes (every attribute is in the bytes, as the words of its value); the
    attributes are searched for them only when the bytes hold one, to say where it is, or when
    the bytes are text in ISO 2022 (see :func:`_iso_2022`: there the attributes are always
    searched as decoded, and the words that rule values out are those of the bytes read with
    the escapes as spaces too). Without its bytes (a deflated file), or when they are built
    already, all of them. Either way the instance UIDs and the dates are all there."""
    if header is not None and pending.built is None:
        iso_2022 = _iso_2022(header)
        split = output_words(header, relative_path.split("/"), iso_2022=iso_2022)
        needles = pending.recorder.build(split[1])
        needles.add_dates(offset_days, split[1])
        matcher = Matcher(needles)
        pending.checked = needles
        if iso_2022:
            return matcher, None  # check() searches the bytes and every attribute
        # (the file name's words among the bytes' words only add candidates the search rejects)
        return matcher, matcher.search_bytes(header, encodings(out), split) if matcher else []
    needles = pending.needles
    needles.add_dates(offset_days)
    pending.checked = needles
    return Matcher(needles), None
