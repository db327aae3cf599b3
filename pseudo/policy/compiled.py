"""A policy compiled for speed: one decision per attribute, with where it came from.

Order of precedence, first match wins (``docs/policies.md``):

1. group lengths ``(gggg,0000)`` are always removed (they are recomputed on writing);
2. the policy's rules: the most specific selector first (sequence path, then exact tag,
   keyword or private creator, then tag pattern, then all private attributes, then VR); at equal
   specificity a child policy's rule before its parent's, a conditional rule (``when``) before
   an unconditional one, and a later rule before an earlier one;
3. Table E.1-1: the row's option code when one of the chosen options changes it, else the
   Basic Profile code; exact rows before repeating-group rows, then the private-attributes row;
4. for standard attributes the table does not list (safety nets, fail closed):
   ``defaults.identifying`` for those of the Patient, Visit and Person modules or naming a
   person (:mod:`pseudo.policy.identifying`), then ``defaults.vr`` by VR;
5. ``defaults.standard`` for other attributes of the data dictionary, ``defaults.unknown`` for
   public tags the dictionary does not know, and ``defaults.private`` for private tags.

Combined codes of the table (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``) are resolved per file by the
type of the attribute in the object's IOD (:mod:`pseudo.policy.iod`): the decision carries the
code in ``compound`` and, as its action, the strictest choice the code allows (the one taken
when the IOD is not known). ``X/Z/U*`` keeps the sequence and remaps the UIDs inside it, at
every type and depth, so that references to other instances still resolve; every attribute
inside the sequence is still processed by this table.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from pseudo.dicom.private import creator_of
from pseudo.dicom.tags import TagPattern, is_standard, parse_tag_pattern
from pseudo.policy.additions import Addition
from pseudo.policy.identifying import identity_attributes, is_identifying
from pseudo.policy.model import OPTIONS, Action
from pseudo.policy.private_kb import SafePrivateTable
from pseudo.policy.selectors import CompiledCondition, CompiledSelector, Parents
from pseudo.policy.table import ConfidentialityTable, TableRow

#: Reduction of the table's combined codes when the IOD is not known (module docstring).
COMBINED_CODES = {"X/Z": "X", "X/D": "X", "Z/D": "Z", "X/Z/D": "X", "X/Z/U*": "U"}
#: Combined codes resolved per file by the IOD (:mod:`pseudo.policy.iod`).
IOD_RESOLVED = frozenset({"X/Z", "X/D", "Z/D", "X/Z/D"})
CODE_ACTIONS = {
    "X": Action.REMOVE,
    "Z": Action.EMPTY,
    "D": Action.DUMMY,
    "K": Action.KEEP,
    "C": Action.CLEAN,
    "U": Action.REMAP_UID,
}
#: When two chosen options both change a row, the stricter code wins (fail closed).
STRICTNESS = {"X": 0, "Z": 1, "D": 2, "U": 3, "C": 4, "K": 5}
GROUP_LENGTH = "built-in: group lengths are recomputed on writing"
#: The combined codes by which ``conform_to_iod`` resolves an emptying rule and a removal by
#: ``defaults.standard`` (an allow-list; :data:`pseudo.policy.iod.ALLOW_LIST_CODE`).
CONFORM_CODE = "X/Z/D"
CONFORM_ALLOW_LIST_CODE = "X/Z/D/K"
#: Options that are not a column of Table E.1-1 act through the column they refine.
OPTION_COLUMNS = {"retain_safe_private_tcia": "retain_safe_private"}


@dataclass(frozen=True, slots=True)
class Decision:
    """The action for one attribute and the rule or table row it comes from."""

    action: Action
    source: str
    value: str | None = None
    max_input_length: int | None = None
    pattern: str | None = None
    replacement: str | None = None
    #: A combined code of Table E.1-1 that the walker resolves by the object's IOD.
    compound: str | None = None


@dataclass(frozen=True)
class CompiledRule:
    """A rule of a policy file, compiled."""

    id: int
    file: str
    line: int | None
    depth: int  # 0 for the root policy, increasing towards the child
    index: int  # position in its file
    selectors: tuple[CompiledSelector, ...]
    excludes: tuple[CompiledSelector, ...]
    conditions: tuple[CompiledCondition, ...]
    decision: Decision

    @property
    def where(self) -> str:
        """``file:line`` of the rule."""
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Candidate:
    """One selector of one rule, ranked for precedence."""

    rule: CompiledRule
    selector: CompiledSelector

    @property
    def rank(self) -> tuple[int, int, int, int]:
        """Higher wins: specificity, child over parent, conditional, later in file."""
        rule = self.rule
        return (self.selector.specificity, rule.depth, int(bool(rule.conditions)), rule.index)

    @property
    def static(self) -> bool:
        """Whether the candidate applies whenever its tag and VR match."""
        return not (self.selector.dynamic or self.rule.conditions or self.rule.excludes)


def table_decision(row: TableRow, options: list[str], edition: str) -> Decision:
    """The decision of one Table E.1-1 row under the chosen options."""
    source = f"PS3.15 {edition} Table E.1-1 '{row.name}': Basic Profile {row.basic}"
    code = row.basic
    option_codes = [
        (option, row.options[column])
        for option in options
        if (column := OPTION_COLUMNS.get(option, option)) in row.options
    ]
    if option_codes:
        resolved = [(o, COMBINED_CODES.get(c, c)) for o, c in option_codes]
        option, _ = min(resolved, key=lambda item: STRICTNESS[item[1]])
        code = dict(option_codes)[option]
        source += f", option {option} {code}"
    single = COMBINED_CODES.get(code, code)
    if code in IOD_RESOLVED:
        source += f" (combined code {code}: by the object's IOD, else {single})"
        return Decision(CODE_ACTIONS[single], source, compound=code)
    if single != code:
        source += f" (combined code {code}: {single})"
    return Decision(CODE_ACTIONS[single], source)


@dataclass
class CompiledPolicy:
    """The effective policy, ready to decide what happens to each attribute."""

    name: str
    title: str
    chain: list[str]
    options: list[str]
    edition: str
    sha256: str
    profile: str | None = None
    rules: list[CompiledRule] = field(default_factory=list)
    exact_table: dict[int, Decision] = field(default_factory=dict)
    pattern_table: list[tuple[TagPattern, Decision]] = field(default_factory=list)
    private_table: Decision | None = None
    private: Decision = Decision(Action.REMOVE, "built-in: private attributes are removed")
    standard: Decision = Decision(Action.KEEP, "built-in: standard attribute not in the table")
    unknown: Decision = Decision(Action.REMOVE, "built-in: unknown public attribute")
    identifying: Decision | None = None
    vr_defaults: dict[str, Decision] = field(default_factory=dict)
    anchor: _dt.date | None = None
    birth_date: str | None = None
    clean_patterns: list[str] | None = None
    #: attributes set from templates once the walk is done (the ``add`` action)
    additions: list[Addition] = field(default_factory=list)
    #: removals by ``defaults.standard`` and emptying rules resolved by the IOD (conform_to_iod)
    conform_to_iod: bool = False
    #: the safe-private table of the option chosen, its actions resolved by the options
    safe_private: SafePrivateTable | None = None
    _private: dict[tuple[int, str, int], Decision] = field(default_factory=dict, repr=False)
    _candidates: list[Candidate] = field(default_factory=list, repr=False)
    _cache: dict[tuple[int, str], Decision | tuple[tuple[Candidate, ...], Decision]] = field(
        default_factory=dict, repr=False
    )

    # -- facts about the policy ----------------------------------------------------------
    @property
    def temporal(self) -> str:
        """Value of Longitudinal Temporal Information Modified: MODIFIED, UNMODIFIED or REMOVED."""
        if "retain_longitudinal_modified_dates" in self.options:
            return "MODIFIED"
        if "retain_longitudinal_full_dates" in self.options:
            return "UNMODIFIED"
        return "REMOVED"

    @property
    def short_hash(self) -> str:
        """The first 16 hex digits of the policy hash, as written into output files."""
        return self.sha256[:16]

    @property
    def option_codes(self) -> list[str]:
        """CID 7050 keywords of the profile and the options applied (none without the profile)."""
        if self.profile != "ps3.15":
            return []
        return ["BasicApplicationConfidentialityProfile"] + [OPTIONS[o] for o in self.options]

    @property
    def removes_identity(self) -> bool:
        """Whether every attribute carrying the patient's identity (Patient ID and Name, the
        issuer, other IDs, insurance plan...; :func:`~pseudo.policy.identifying.
        identity_attributes`) is removed or replaced."""
        kept = (Action.KEEP, Action.CLEAN, Action.SUBSTITUTE)
        return all(self.decide(tag, vr).action not in kept for tag, vr in identity_attributes())

    @property
    def method(self) -> list[str]:
        """The De-identification Method values: pseudo, the policy and its hash, the standard."""
        from pseudo import __version__

        standard = "no PS3.15 profile"
        if self.profile == "ps3.15":
            standard = f"PS3.15 {self.edition} Table E.1-1"
        return [f"pseudo {__version__}", f"policy {self.name} sha256:{self.short_hash}", standard]

    @property
    def has_conditions(self) -> bool:
        """Whether any rule has a ``when``."""
        return any(rule.conditions for rule in self.rules)

    def decisions(self) -> Iterable[Decision]:
        """Every decision the policy can take."""
        yield from (rule.decision for rule in self.rules)
        yield from self.exact_table.values()
        yield from (d for _, d in self.pattern_table)
        if self.private_table:
            yield self.private_table
        yield from (self.private, self.standard, self.unknown, *self.vr_defaults.values())
        if self.identifying:
            yield self.identifying

    def uses(self, action: Action) -> bool:
        """Whether any decision of this policy can be ``action``."""
        return any(d.action is action for d in self.decisions())

    # -- deciding ------------------------------------------------------------------------
    def add_rule(self, rule: CompiledRule) -> None:
        """Register a compiled rule (used by the loader)."""
        self.rules.append(rule)
        self._candidates.extend(Candidate(rule, s) for s in rule.selectors)
        self._candidates.sort(key=lambda c: c.rank, reverse=True)
        self._cache.clear()

    def clear_candidates(self) -> None:
        """Forget the rules' selectors (before the rules are registered again)."""
        self._candidates.clear()
        self._cache.clear()

    def active_rules(self, ds: Dataset) -> frozenset[int]:
        """Ids of the conditional rules whose ``when`` holds for the file ``ds``."""
        return frozenset(
            rule.id
            for rule in self.rules
            if rule.conditions and all(c.holds(ds) for c in rule.conditions)
        )

    def decide(
        self,
        tag: int,
        vr: str,
        ds: Dataset | None = None,
        parents: Parents = (),
        active: frozenset[int] = frozenset(),
    ) -> Decision:
        """The decision for an attribute of tag ``tag`` and VR ``vr``.

        ``ds`` (the dataset holding it), ``parents`` (the sequences above it) and ``active``
        (the conditional rules that hold for this file) matter only to rules with a creator,
        a path or a condition.
        """
        key = (int(tag), vr)  # a plain int: a pydicom BaseTag would compare in Python
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = self._build(tag, vr)
        if isinstance(entry, Decision):
            return entry
        candidates, fallback = entry
        for candidate in candidates:
            rule = candidate.rule
            if rule.conditions and rule.id not in active:
                continue
            if candidate.selector.dynamic and not candidate.selector.dynamic_match(
                ds, tag, parents
            ):
                continue
            if rule.excludes and any(x.matches(tag, vr, ds, parents) for x in rule.excludes):
                continue
            return rule.decision
        return fallback

    def private_decision(self, ds: Dataset, tag: int, decision: Decision) -> Decision:
        """What a safe-private option does to the private attribute ``tag`` of ``ds`` when the
        policy's ``decision`` is the table's ``clean`` of private attributes: the action of its
        safe-private table, else remove (:mod:`pseudo.policy.private_kb`). Other decisions are
        returned as they are."""
        if (
            self.safe_private is None
            or decision.action is not Action.CLEAN
            or not (tag >> 16) & 1
            or 0x10 <= tag & 0xFFFF <= 0xFF  # a creator stays while its block keeps something
        ):
            return decision
        key = (tag >> 16, creator_of(ds, tag) or "", tag & 0xFF)
        found = self._private.get(key)
        if found is None:
            action, words = self.safe_private.lookup_key(key)
            found = self._private[key] = Decision(action, f"{decision.source}; {words}")
        return found

    def static_decision(self, tag: int, vr: str) -> Decision | None:
        """The decision for this tag and VR when nothing else can change it (no rule with a
        creator, a path or a condition applies), else None."""
        self.decide(tag, vr)  # fills the cache
        entry = self._cache[(int(tag), vr)]
        return entry if isinstance(entry, Decision) else None

    def _build(self, tag: int, vr: str) -> Decision | tuple[tuple[Candidate, ...], Decision]:
        if tag & 0xFFFF == 0:
            return Decision(Action.REMOVE, GROUP_LENGTH)
        matching: list[Candidate] = []
        fallback = self.fallback(tag, vr)
        for candidate in self._candidates:
            if candidate.selector.static_match(tag, vr):
                if candidate.static:
                    if not matching:
                        return candidate.rule.decision
                    fallback = candidate.rule.decision
                    break
                matching.append(candidate)
        return (tuple(matching), fallback) if matching else fallback

    def fallback(self, tag: int, vr: str) -> Decision:
        """The decision when no rule applies: the table, then the defaults."""
        if tag in self.exact_table:
            return self.exact_table[tag]
        for pattern, decision in self.pattern_table:
            if pattern.matches(tag):
                return decision
        if (tag >> 16) & 1:
            return self.private_table or self.private
        if not is_standard(tag):
            return self.unknown
        if self.identifying is not None and is_identifying(tag):
            return self.identifying
        if vr in self.vr_defaults:
            return self.vr_defaults[vr]
        return self.standard

    def candidates_for(self, tag: int, vr: str) -> list[Candidate]:
        """Every rule selector that could decide this attribute, highest precedence first."""
        return [c for c in self._candidates if c.selector.static_match(tag, vr)]


def add_table(policy: CompiledPolicy, table: ConfidentialityTable) -> None:
    """Fill the table decisions of ``policy`` from Table E.1-1 under its options."""
    for row in table.rows:
        decision = table_decision(row, policy.options, table.edition)
        if row.tag == "private":
            policy.private_table = decision
            continue
        pattern = parse_tag_pattern(row.tag)
        if pattern is None:
            raise ValueError(f"generated table: bad tag {row.tag!r}")
        if pattern.is_exact:
            policy.exact_table[pattern.value] = decision
        else:
            policy.pattern_table.append((pattern, decision))
    # More specific patterns first: (60xx,3000) before (50xx,xxxx).
    policy.pattern_table.sort(key=lambda item: -bin(item[0].mask).count("1"))
