"""The identity book: keyed fingerprints of each patient, and the rules that give an identity
another pseudonym than its keyed one (an imported subject ID, a merge, a split).

Everything here is keyed with the project's identity sub-key (HKDF label
``pseudo/v1/identity-fingerprint``): the operator station, which holds the project secret,
computes and compares the digests; a copy of the database holds nothing to compare with a
list of birth dates. Identities are plain tuples of strings chosen by the caller (the DICOM
side decides what they are made of); this module never sees a data set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine, bindparam, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from keystore import crypto
from keystore.db import IdentityFingerprintRow, IdentityRuleRow, LinkageRow, failure, upsert
from keystore.errors import DatabaseError
from keystore.keyring import Keyring
from keystore.stamps import utcnow

#: The traits of a patient the project keeps a fingerprint of. A contradiction in the first
#: two is an identity conflict (the file is quarantined); in the name, a warning.
TRAITS = ("birth_date", "sex", "name")
CONFLICTING_TRAITS = ("birth_date", "sex")

#: The kinds of rule, in the order a file's rules are tried: a split's conditions first.
RULE_KINDS = ("split", "subject", "merge")


def lookup_key(keyring: Keyring, identity: Sequence[str]) -> str:
    """The keyed digest under which the rules of an identity are found."""
    return keyring.mac("identity", "lookup", *identity).hex()


def fingerprint(keyring: Keyring, pseudonym: str, trait: str, value: str) -> str:
    """The keyed fingerprint of one trait of a pseudonym's patient (bound to the pseudonym)."""
    return keyring.mac("identity", "fingerprint", pseudonym, trait, value).hex()


def condition(keyring: Keyring, lookup: str, trait: str, value: str) -> str:
    """The keyed form of a split's condition on one trait of an identity."""
    return keyring.mac("identity", "condition", lookup, trait, value).hex()


def identity_check(keyring: Keyring, identity: Sequence[str], traits: Mapping[str, str]) -> str:
    """A keyed digest of an identity and its traits: what the header scan saw of a file, for
    the full read to confirm (the run's identity checks hold only if both read the same)."""
    values = [traits.get(trait, "") for trait in TRAITS]
    return keyring.mac("identity", "check", json.dumps(list(identity)), *values).hex()[:32]


def recorded_key(identity: Sequence[str]) -> str | None:
    """The identity as a sealed patient record keeps it, when its other fields do not give it
    again (an identity longer than ``(basis, issuer, value)``: a site's or a qualifier's
    namespace); else None."""
    return json.dumps(list(identity)) if len(identity) > 3 else None


@dataclass(frozen=True)
class Rule:
    """An identity's pseudonym and date offset, when not its keyed ones; ``conditions``
    (trait, keyed value) must all hold for the rule to apply (a split)."""

    kind: str
    pseudonym: str
    offset_days: int
    conditions: tuple[tuple[str, str], ...] = ()

    def applies(self, conditions: Mapping[str, str]) -> bool:
        """Whether a file whose traits give ``conditions`` (trait -> keyed value) is ruled."""
        return all(conditions.get(trait) == value for trait, value in self.conditions)


@dataclass(frozen=True)
class IdentityBook:
    """Every rule of a project, by lookup key, in the order they are tried (handed to the
    workers of a run)."""

    rules: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)

    def find(
        self, keyring: Keyring, identity: Sequence[str], traits: Mapping[str, str]
    ) -> Rule | None:
        """The rule that gives ``identity`` (with these traits) its pseudonym, or None."""
        if not self.rules:
            return None
        lookup = lookup_key(keyring, identity)
        candidates = self.rules.get(lookup)
        if not candidates:
            return None
        conditions = {
            trait: condition(keyring, lookup, trait, value)
            for trait, value in traits.items()
            if value
        }
        return next((rule for rule in candidates if rule.applies(conditions)), None)


@dataclass(frozen=True)
class Prints:
    """The keyed fingerprints the project holds of one pseudonym's patient (None: unknown)."""

    birth_date: str | None = None
    sex: str | None = None
    name: str | None = None

    def get(self, trait: str) -> str | None:
        """The fingerprint of ``trait``."""
        value: str | None = getattr(self, trait)
        return value


def _rule_context(project: str, key: str) -> bytes:
    return crypto.encode_parts("pseudo-identity-rule/1", project, key)


class IdentityStore:
    """Reads and writes the identity book of the linkage store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _session(self, what: str) -> Iterator[Session]:
        try:
            with Session(self.engine) as session:
                yield session
                session.commit()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot {what} the identity book: {failure(exc)}") from exc

    # -- rules ----------------------------------------------------------------------------
    def book(self, keyring: Keyring) -> IdentityBook:
        """Every rule of the project, each lookup's conditional rules first."""
        found: dict[str, list[tuple[int, int, Rule]]] = {}
        with self._session("read") as session:
            rows = session.exec(
                select(IdentityRuleRow)
                .where(IdentityRuleRow.project == keyring.project)
                .order_by(col(IdentityRuleRow.id))
            )
            for row in rows:
                plain = keyring.open_state(row.sealed, _rule_context(row.project, row.key))
                data = json.loads(plain)
                rule = Rule(
                    row.kind,
                    row.pseudonym,
                    int(data["offset_days"]),
                    tuple((str(t), str(v)) for t, v in data.get("conditions", [])),
                )
                order = RULE_KINDS.index(row.kind) if row.kind in RULE_KINDS else len(RULE_KINDS)
                # the newest decision of a kind first: a later merge re-points an earlier one
                found.setdefault(row.key, []).append((order, -(row.id or 0), rule))
        return IdentityBook(
            {key: tuple(rule for *_, rule in sorted(rules)) for key, rules in found.items()}
        )

    def add_rules(self, keyring: Keyring, rules: Iterable[tuple[str, Rule]]) -> int:
        """Store ``(lookup key, rule)`` pairs (one already stored is left as it is); returns
        how many there were."""
        rows = [
            {
                "project": keyring.project,
                "key": key,
                "kind": rule.kind,
                "pseudonym": rule.pseudonym,
                "sealed": keyring.seal_state(
                    json.dumps(
                        {"offset_days": rule.offset_days, "conditions": list(rule.conditions)},
                        sort_keys=True,
                    ).encode(),
                    _rule_context(keyring.project, key),
                ),
                "created_at": utcnow(),
            }
            for key, rule in rules
        ]
        with self._session("write") as session:
            upsert(session, IdentityRuleRow, rows)
        return len(rows)

    def pseudonyms_in_use(self, project: str, pseudonyms: Iterable[str]) -> set[str]:
        """Those of ``pseudonyms`` that the project's linkage or rules already hold."""
        wanted = sorted(set(pseudonyms))
        used: set[str] = set()
        with self._session("read") as session:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                for model in (LinkageRow, IdentityRuleRow):
                    stmt = select(model.pseudonym).where(
                        model.project == project, col(model.pseudonym).in_(chunk)
                    )
                    used.update(session.exec(stmt))
        return used

    # -- fingerprints ---------------------------------------------------------------------
    def fingerprints(self, project: str, pseudonyms: Iterable[str]) -> dict[str, Prints]:
        """What the project holds of each of ``pseudonyms`` that it knows."""
        wanted = sorted(set(pseudonyms))
        found: dict[str, Prints] = {}
        with self._session("read") as session:
            for start in range(0, len(wanted), 500):
                stmt = select(IdentityFingerprintRow).where(
                    IdentityFingerprintRow.project == project,
                    col(IdentityFingerprintRow.pseudonym).in_(wanted[start : start + 500]),
                )
                for row in session.exec(stmt):
                    found[row.pseudonym] = Prints(row.birth_date, row.sex, row.name)
        return found

    def claim_fingerprints(self, project: str, proposals: Mapping[str, Prints]) -> None:
        """Record ``proposals``: a pseudonym's first fingerprints, and a trait it had none of;
        a fingerprint already recorded (by an earlier or a concurrent run) is never changed."""
        if not proposals:
            return
        rows = [
            {"project": project, "pseudonym": pseudonym, "created_at": utcnow(), **vars(prints)}
            for pseudonym, prints in sorted(proposals.items())
        ]
        table = IdentityFingerprintRow.__table__  # type: ignore[attr-defined]
        with self._session("write") as session:
            upsert(session, IdentityFingerprintRow, rows)
            for trait in TRAITS:
                fills = [
                    {"p": pseudonym, "v": value}
                    for pseudonym, prints in sorted(proposals.items())
                    if (value := prints.get(trait)) is not None
                ]
                if not fills:
                    continue
                statement = (
                    update(table)
                    .where(
                        table.c.project == project,
                        table.c.pseudonym == bindparam("p"),
                        table.c[trait].is_(None),
                    )
                    .values({trait: bindparam("v")})
                )
                session.execute(statement, fills)
