"""Why a policy decides what it decides about one attribute (``pseudo policy explain``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from pseudo.dicom.tags import TagPattern, standard_vr, tag_text
from pseudo.policy.additions import template_fields
from pseudo.policy.compiled import (
    CODE_ACTIONS,
    GROUP_LENGTH,
    Candidate,
    CompiledPolicy,
    Decision,
)
from pseudo.policy.iod import IodTypes
from pseudo.policy.model import Action
from pseudo.policy.selectors import Parents


@dataclass
class Step:
    """One rule, table row or default that could decide the attribute."""

    kind: str  # add | rule | table | default
    source: str
    action: str
    requires: list[str] = field(default_factory=list)  # conditions for a rule to apply

    def to_json(self) -> dict[str, object]:
        """Plain data for ``--json``."""
        return {
            "kind": self.kind,
            "source": self.source,
            "action": self.action,
            "requires": self.requires,
        }


@dataclass
class Explanation:
    """The steps that can decide an attribute, highest precedence first."""

    tag: int
    name: str
    vr: str
    steps: list[Step]

    @property
    def decided_by(self) -> Step:
        """The first step that applies without any requirement."""
        return next(step for step in self.steps if not step.requires)


def _requirements(candidate: Candidate) -> list[str]:
    rule, selector = candidate.rule, candidate.selector
    requires = [f"when {c.describe()}" for c in rule.conditions]
    if selector.creator is not None:
        requires.append(f"private creator is {selector.creator!r}")
    if selector.parents is not None:
        requires.append(f"inside {selector.text.rsplit('.', 1)[0]}")
    if rule.excludes:
        requires.append("not " + ", ".join(x.text for x in rule.excludes))
    return requires


def resolved(
    decision: Decision,
    sop_class: str | None,
    path: tuple[str, ...],
    keyword: str,
    vr: str | None = None,
) -> Decision:
    """``decision`` with its combined code (if any) resolved by the IOD of ``sop_class``, as the
    walker resolves it (:mod:`pseudo.policy.iod`)."""
    if decision.compound is None or sop_class is None:
        return decision
    resolution = IodTypes.load().resolve(decision.compound, sop_class, path, keyword, vr)
    action = CODE_ACTIONS[resolution.code]
    source = f"{decision.source}; {resolution.describe()}"
    if action is Action.DUMMY and standard_vr_is_sequence(keyword):
        action, source = Action.REMAP_UID, source + " (a required sequence: items processed)"
    return Decision(action, source)


def standard_vr_is_sequence(keyword: str) -> bool:
    """Whether the attribute of this keyword is a sequence."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return tag is not None and standard_vr(tag) == "SQ"


def explain(
    policy: CompiledPolicy, tag: int, vr: str | None = None, sop_class: str | None = None
) -> Explanation:
    """Every rule, the table row and the default that bear on ``tag``, in precedence order;
    with ``sop_class``, a combined code of the table is resolved by that SOP Class's IOD."""
    vr = vr or (standard_vr(tag) or "UN").split(" or ")[0]
    name = _name(tag)
    if tag & 0xFFFF == 0:
        return Explanation(tag, name, vr, [Step("default", GROUP_LENGTH, "remove")])
    steps = [
        Step(
            "rule",
            f"{c.rule.where} select {c.selector.text}: {decision.source}",
            decision.action.value,
            _requirements(c),
        )
        for c in policy.candidates_for(tag, vr)
        for decision in [resolved(c.rule.decision, sop_class, (), name, vr)]
    ]
    fallback = resolved(policy.fallback(tag, vr), sop_class, (), name, vr)
    kind = "table" if fallback.source.startswith("PS3.15") else "default"
    steps.append(Step(kind, fallback.source, fallback.action.value))
    # an ``add`` rule acts after the decision above, when its template can be filled
    added = [
        Step(
            "add",
            f"{a.source}: then set to {a.template!r} at the top level (added if absent)",
            Action.ADD.value,
            [f"the run gives {field}" for field in template_fields(a.template)],
        )
        for a in policy.additions
        if a.tag == tag
    ]
    return Explanation(tag, name, vr, added + steps)


def _name(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or tag_text(tag)


@dataclass
class Occurrence:
    """Where an attribute occurs in a file and what the policy does to it there."""

    path: str
    vr: str
    decision: Decision


def occurrences(policy: CompiledPolicy, ds: Dataset, pattern: TagPattern) -> list[Occurrence]:
    """Every occurrence of attributes matching ``pattern`` in ``ds``, with its decision."""
    from pseudo.dicom.tags import attribute_name, element_vr

    active = policy.active_rules(ds) if policy.has_conditions else frozenset()
    sop_class = str(ds.get("SOPClassUID", "")).strip() or None

    def visit(level: Dataset, prefix: str, parents: Parents) -> Iterator[Occurrence]:
        for tag in list(level.keys()):
            element = level.get_item(tag)
            vr = element_vr(element, tag)
            path = prefix + attribute_name(tag)
            if pattern.matches(tag):
                decision = policy.decide(tag, vr, level, parents, active)
                keywords = tuple(attribute_name(p) for p, _ in parents)
                decision = resolved(decision, sop_class, keywords, attribute_name(tag), vr)
                yield Occurrence(path, vr, decision)
            if vr == "SQ":
                try:
                    items = level[tag].value
                except Exception:
                    continue
                for index, item in enumerate(items):
                    yield from visit(item, f"{path}[{index}].", (*parents, (tag, index)))

    return list(visit(ds, "", ()))
