"""The identity checks of a run, made by the parent from the header scan of every file before
any file is released.

Within one issuer, a file whose birth date or sex contradicts what the project holds for that
patient is an identity conflict: it is quarantined, never processed (nothing written, nothing
linked). The project holds keyed fingerprints (:mod:`keystore.identities`); a patient's first
run records them. Files of one run that disagree among themselves on a patient the project
knows nothing of yet are all quarantined (whatever their order, whatever the number of
workers): the run cannot tell which one is right. A different name alone is a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from keystore.identities import (
    CONFLICTING_TRAITS,
    TRAITS,
    IdentityBook,
    IdentityStore,
    Prints,
    fingerprint,
    identity_check,
)
from keystore.keyring import Keyring
from pseudo.deid.anchors import Scan
from pseudo.deid.identity import Site, identity_of
from pseudo.deid.tokens import patient_pseudonym
from pseudo.findings import RejectedFile

#: How a reason names a trait.
_LABELS = {"birth_date": "Patient's Birth Date", "sex": "Patient's Sex", "name": "Patient's Name"}
#: The code of the warning a file gets when its name differs from the one the project holds.
NAME_WARNING = "identity-name"


@dataclass
class Verdicts:
    """What the identity checks decided, by input path."""

    #: what the scan saw of each file's identity, for the full read to confirm ("": nothing)
    checks: dict[str, str] = field(default_factory=dict)
    #: the pseudonym of each file's patient
    pseudonyms: dict[str, str] = field(default_factory=dict)
    #: the files quarantined, with their reason
    conflicts: dict[str, str] = field(default_factory=dict)
    #: the files released with a warning (a name that differs)
    warnings: dict[str, str] = field(default_factory=dict)


def settle(
    keyring: Keyring,
    store: IdentityStore,
    book: IdentityBook,
    site: Site | None,
    paths: Sequence[str],
    scans: Iterable[Scan | None],
    *,
    record: bool = True,
) -> Verdicts:
    """Check every scanned file's patient against the project's fingerprints (recording the
    fingerprints of patients the project did not know, unless ``record`` is false)."""
    verdicts = Verdicts()
    prints: dict[str, dict[str, str]] = {}
    patients: dict[str, list[str]] = {}
    for path, scan in zip(paths, scans, strict=True):
        verdicts.checks[path] = ""
        if scan is None:
            continue
        try:
            identity = identity_of(scan.fields, site)
        except RejectedFile:
            continue
        traits = identity.traits
        verdicts.checks[path] = identity_check(keyring, identity.key, traits)
        patient = patient_pseudonym(keyring, identity.key, traits, book)
        verdicts.pseudonyms[path] = patient
        prints[path] = {t: fingerprint(keyring, patient, t, v) for t, v in traits.items() if v}
        patients.setdefault(patient, []).append(path)
    seen = {
        patient: {t: sorted({prints[f][t] for f in files if t in prints[f]}) for t in TRAITS}
        for patient, files in patients.items()
    }
    held = store.fingerprints(keyring.project, patients)
    proposals = _proposals(held, seen)
    if record:
        store.claim_fingerprints(keyring.project, proposals)
        held = store.fingerprints(keyring.project, patients)
    else:
        held = {p: _filled(held.get(p, Prints()), new) for p, new in proposals.items()} | {
            p: known for p, known in held.items() if p not in proposals
        }
    for patient, files in patients.items():
        known = held.get(patient, Prints())
        for path in files:
            reasons = _contradictions(patient, prints[path], known, seen[patient])
            if reasons:
                verdicts.conflicts[path] = (
                    f"identity conflict: {'; '.join(reasons)} (nothing written or linked; "
                    "`pseudo identity split` or `merge` resolves it)"
                )
                continue
            name = prints[path].get("name")
            if name is not None and known.name is not None and name != known.name:
                verdicts.warnings[path] = (
                    f"{_LABELS['name']} differs from the one the project holds for {patient} "
                    "(released: names change; check it is the same person)"
                )
    return verdicts


def _proposals(held: dict[str, Prints], seen: dict[str, dict[str, list[str]]]) -> dict[str, Prints]:
    """The fingerprints a run records: each trait the project does not hold of a patient,
    when the run's files agree on it (a name: the smallest digest, so that the choice does
    not depend on file order)."""
    proposals: dict[str, Prints] = {}
    for patient, traits in seen.items():
        known = held.get(patient, Prints())
        new: dict[str, str] = {}
        for trait, values in traits.items():
            if known.get(trait) is not None or not values:
                continue
            if trait in CONFLICTING_TRAITS and len(values) > 1:
                continue
            new[trait] = values[0]
        if new:
            proposals[patient] = Prints(**new)
    return proposals


def _filled(known: Prints, new: Prints) -> Prints:
    """``known`` with the traits it lacks taken from ``new``."""
    return replace(known, **{t: new.get(t) for t in TRAITS if known.get(t) is None})


def _contradictions(
    patient: str, mine: dict[str, str], known: Prints, seen: dict[str, list[str]]
) -> list[str]:
    """Why a file's birth date or sex cannot be this patient's (empty: they can)."""
    reasons = []
    for trait in CONFLICTING_TRAITS:
        value = mine.get(trait)
        if value is None:
            continue
        held = known.get(trait)
        if held is None and len(seen[trait]) > 1:
            reasons.append(f"the files of this run give {patient} different {_LABELS[trait]}s")
        elif held is not None and value != held:
            reasons.append(f"{_LABELS[trait]} differs from the one the project holds for {patient}")
    return reasons
