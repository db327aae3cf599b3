"""A policy compiled for speed: one decision per attribute, with where it came from.

Order of precedence, first match wins (``docs/policies.md``):

1. group lengths ``(gggg,0000)`` are always removed (they are recomputed on writing);
2. the policy's rules, later rules over earlier ones and a child policy's over its parent's,
   exact tags and keywords before patterns;
3. Table E.1-1: the row's option code when one of the chosen options changes it, else the
   Basic Profile code; exact rows before repeating-group rows, then the private-attributes row;
4. ``defaults.vr`` for standard attributes the table does not list (safety nets);
5. ``defaults.standard`` for other attributes of the data dictionary, ``defaults.unknown`` for
   public tags the dictionary does not know, and ``defaults.private`` for private tags.

Combined codes of the table are reduced to one action, the strictest the standard allows
without knowledge of the IOD: ``X/Z``, ``X/D`` and ``X/Z/D`` remove, ``Z/D`` empties, and
``X/Z/U*`` keeps the sequence and remaps the UIDs inside it, so that references to other
instances still resolve; every attribute inside the sequence is still processed by this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pseudo.policy.model import OPTIONS, Action
from pseudo.policy.table import ConfidentialityTable, TableRow
from pseudo.tags import TagPattern, is_standard

#: Reduction of the table's combined codes (see the module docstring).
COMBINED_CODES = {"X/Z": "X", "X/D": "X", "Z/D": "Z", "X/Z/D": "X", "X/Z/U*": "U"}
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


@dataclass(frozen=True, slots=True)
class Decision:
    """The action for one attribute and the rule or table row it comes from."""

    action: Action
    source: str
    value: str | None = None
    max_input_length: int | None = None


def table_decision(row: TableRow, options: list[str], edition: str) -> Decision:
    """The decision of one Table E.1-1 row under the chosen options."""
    source = f"PS3.15 {edition} Table E.1-1 '{row.name}': Basic Profile {row.basic}"
    code = row.basic
    option_codes = [(option, row.options[option]) for option in options if option in row.options]
    if option_codes:
        resolved = [(o, COMBINED_CODES.get(c, c)) for o, c in option_codes]
        option, code = min(resolved, key=lambda item: STRICTNESS[item[1]])
        source += f", option {option} {dict(option_codes)[option]}"
    single = COMBINED_CODES.get(code, code)
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
    exact_rules: dict[int, Decision] = field(default_factory=dict)
    pattern_rules: list[tuple[TagPattern, Decision]] = field(default_factory=list)
    exact_table: dict[int, Decision] = field(default_factory=dict)
    pattern_table: list[tuple[TagPattern, Decision]] = field(default_factory=list)
    private_table: Decision | None = None
    private: Decision = Decision(Action.REMOVE, "built-in: private attributes are removed")
    standard: Decision = Decision(Action.KEEP, "built-in: standard attribute not in the table")
    unknown: Decision = Decision(Action.REMOVE, "built-in: unknown public attribute")
    vr_defaults: dict[str, Decision] = field(default_factory=dict)
    _cache: dict[tuple[int, str], Decision] = field(default_factory=dict, repr=False)

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
        """CID 7050 keywords of the profile and the options applied, in order."""
        return ["BasicApplicationConfidentialityProfile"] + [OPTIONS[o] for o in self.options]

    def decide(self, tag: int, vr: str) -> Decision:
        """The decision for an attribute with this tag and VR (cached)."""
        key = (tag, vr)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._decide(tag, vr)
            self._cache[key] = decision
        return decision

    def _decide(self, tag: int, vr: str) -> Decision:
        if tag & 0xFFFF == 0:
            return Decision(Action.REMOVE, "built-in: group lengths are recomputed on writing")
        if tag in self.exact_rules:
            return self.exact_rules[tag]
        for pattern, decision in self.pattern_rules:
            if pattern.matches(tag):
                return decision
        if tag in self.exact_table:
            return self.exact_table[tag]
        for pattern, decision in self.pattern_table:
            if pattern.matches(tag):
                return decision
        if (tag >> 16) & 1:
            return self.private_table or self.private
        if not is_standard(tag):
            return self.unknown
        if vr in self.vr_defaults:
            return self.vr_defaults[vr]
        return self.standard

    def uses(self, action: Action) -> bool:
        """Whether any decision of this policy can be ``action``."""
        decisions = [
            *self.exact_rules.values(),
            *(d for _, d in self.pattern_rules),
            *self.exact_table.values(),
            *(d for _, d in self.pattern_table),
            self.private_table or self.private,
            self.standard,
            self.unknown,
            *self.vr_defaults.values(),
        ]
        return any(d.action is action for d in decisions)


def add_table(policy: CompiledPolicy, table: ConfidentialityTable) -> None:
    """Fill the table decisions of ``policy`` from Table E.1-1 under its options."""
    from pseudo.tags import parse_tag_pattern

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
