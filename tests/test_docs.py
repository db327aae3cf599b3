"""The examples in the documentation are real: every policy example runs and does what it says.

Each YAML example of ``docs/*.md`` that starts with ``name:`` is followed by a hidden comment
``<!-- expected ... -->`` holding a YAML list of cases. A case changes the synthetic dataset of
``tests/synthetic.py`` (``given``), runs the example on it, and checks the outcome of each
attribute (``expect``). Attributes are named by keyword, by ``(gggg,eeee)``, by a path such as
``RequestAttributesSequence[0].RequestedProcedureID``, or by private creator and tag pattern
(``ACME 1.0 (0029,xx10)``). In ``given`` a value of ``null`` deletes the attribute, and a
private attribute is given as ``[VR, value]``. In ``expect``:

* a string: the value, exactly; ``''``: present and empty; ``null``: absent;
* ``{same: true}`` / ``{changed: true}``: the value the case gave (or the dataset had) stayed or
  changed; ``{match: REGEX}``: the whole value matches;
* ``{shifted: true}``: a date moved by the patient's offset; ``{year_only: true}``: the shifted
  date reduced to its year; ``{remapped: true}``: a new ``2.25.`` UID;
* ``{pseudonym: true}``: the patient's pseudonym; ``{decrypts: TEXT}``: a reversible token of
  TEXT.

Every action and every selector kind of the policy language must decide at least one checked
attribute of some example, and every condition kind must be used, so a new action or selector
cannot be documented without an executable example.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from pseudo.deid.engine import Pseudonymizer
from pseudo.deid.identity import read_identity
from pseudo.deid.tokens import decrypt_token, pseudonym
from pseudo.dicom.tags import element_vr, parse_tag_pattern, tag_text
from pseudo.policy import Action, CompiledPolicy, load_policy
from pseudo.policy.selectors import SPECIFICITY, Parents
from tests.conftest import REPO
from tests.synthetic import dataset, make_keyring

EXAMPLE = re.compile(r"```yaml\n(name: .*?)```\n(?:<!-- expected\n(.*?)-->)?", re.S)
_PRIVATE = re.compile(
    r"^(?P<creator>.+?)\s+\((?P<group>[0-9A-Fa-f]{4}),xx(?P<element>[0-9A-Fa-f]{2})\)$"
)
_SEGMENT = re.compile(r"^(?P<name>[^\[]+)(?:\[(?P<index>\d+)\])?$")
KEYRING = make_keyring()


@dataclass(frozen=True)
class Example:
    where: str
    text: str
    cases: list[dict[str, Any]] | None


def _examples() -> list[Example]:
    found = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        for index, match in enumerate(EXAMPLE.finditer(doc.read_text())):
            cases = yaml.safe_load(match[2]) if match[2] is not None else None
            found.append(Example(f"{doc.name}#{index}", match[1], cases))
    return found


EXAMPLES = _examples()


def _load(example: Example, folder: Path) -> CompiledPolicy:
    name = re.match(r"name: (\S+)", example.text)
    assert name is not None
    path = folder / f"{name.group(1)}.yaml"
    path.write_text(example.text)
    policy = load_policy(str(path))
    assert policy.name == name.group(1)
    return policy


# -- naming attributes ----------------------------------------------------------------------
def _locate(ds: Dataset, name: str, *, create: bool = False) -> tuple[Dataset, int, Parents]:
    """The dataset holding the attribute ``name``, its tag, and the sequences above it."""
    private = _PRIVATE.match(name)
    if private:
        group, element = int(private["group"], 16), int(private["element"], 16)
        try:
            block = ds.private_block(group, private["creator"], create=create)
        except KeyError:
            return ds, -1, ()  # no such creator: the attribute cannot be there
        return ds, block.get_tag(element), ()
    current: Dataset = ds
    parents: Parents = ()
    segments = name.split(".")
    for segment in segments[:-1]:
        match = _SEGMENT.match(segment)
        assert match is not None and match["index"] is not None, f"{name}: need [index]"
        tag = int(tag_for_keyword(match["name"]) or 0)
        parents = (*parents, (tag, int(match["index"])))
        current = current[tag].value[int(match["index"])]
    return current, _tag(segments[-1]), parents


def _tag(name: str) -> int:
    pattern = parse_tag_pattern(name)
    if pattern is not None:
        assert pattern.is_exact, name
        return pattern.value
    tag = tag_for_keyword(name)
    assert tag is not None, f"unknown keyword {name}"
    return int(tag)


def _given(ds: Dataset, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        holder, tag, _ = _locate(ds, name, create=value is not None)
        if value is None:
            if tag in holder:
                del holder[tag]
        elif isinstance(value, list):
            holder[tag] = DataElement(tag, value[0], value[1])
        else:
            holder[tag] = DataElement(tag, element_vr(None, tag), value)


# -- checking outcomes ----------------------------------------------------------------------
def _day(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _check(
    case: str,
    name: str,
    spec: Any,
    before: str | None,
    after: str | None,
    offset: int,
    patient: str,
) -> None:
    where = f"{case}: {name}: expected {spec!r}, got {after!r} (input {before!r})"
    if spec is None:
        assert after is None, where
        return
    assert after is not None, where
    if not isinstance(spec, dict):
        assert after == str(spec), where
        return
    ((kind, argument),) = spec.items()
    if kind == "same":
        assert after == before, where
    elif kind == "changed":
        assert before is not None and after != before, where
    elif kind == "match":
        assert re.fullmatch(argument, after), where
    elif kind == "shifted":
        assert before is not None, where
        assert after == (_day(before) + timedelta(days=offset)).strftime("%Y%m%d"), where
    elif kind == "year_only":
        assert before is not None, where
        year = str((_day(before) + timedelta(days=offset)).year)
        assert after in (year, year + "0101"), where
    elif kind == "remapped":
        assert after.startswith("2.25.") and after != before, where
    elif kind == "pseudonym":
        assert after == patient, where
    elif kind == "decrypts":
        assert decrypt_token(KEYRING, name, after) == argument, where
    else:
        raise AssertionError(f"{name}: unknown expectation {kind!r}")


def _value(ds: Dataset, name: str) -> tuple[str | None, str]:
    """The attribute's value as text (None if absent), and its name for messages and tokens
    (the tag of a private attribute, the keyword of others)."""
    private = _PRIVATE.match(name)
    try:
        holder, tag, _ = _locate(ds, name)
    except (KeyError, IndexError):
        return None, name
    label = tag_text(tag) if private and tag >= 0 else name.split(".")[-1]
    if tag < 0 or tag not in holder:
        return None, label
    value = holder[tag].value
    if value is None:
        return "", label
    if isinstance(value, list):
        return "\\".join(map(str, value)), label
    return str(value), label


@dataclass
class Coverage:
    """What the checked attributes of the examples exercised."""

    actions: set[Action] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    conditions: set[str] = field(default_factory=set)

    def record(self, policy: CompiledPolicy, ds: Dataset, name: str) -> None:
        """Note which action and selector kind decide the attribute ``name`` of ``ds``."""
        if any(addition.keyword == name for addition in policy.additions):
            self.actions.add(Action.ADD)  # set after the walk, not decided by it
            return
        try:
            holder, tag, parents = _locate(ds, name)
        except (KeyError, IndexError):
            return
        if tag < 0 or tag not in holder:
            return
        vr = element_vr(holder.get_item(tag), tag)
        active = policy.active_rules(ds) if policy.has_conditions else frozenset()
        decision = policy.decide(tag, vr, holder, parents, active)
        self.actions.add(decision.action)
        for rule in policy.rules:
            if rule.decision is decision:
                self.kinds.update(
                    s.kind for s in rule.selectors if s.matches(tag, vr, holder, parents)
                )


def _run(policy: CompiledPolicy, ds: Dataset) -> tuple[Dataset, int, str]:
    patient = pseudonym(KEYRING, read_identity(ds).key)
    offsets = {}
    if policy.anchor is not None:
        offsets[patient] = (policy.anchor - _day(str(ds.StudyDate))).days
    result = Pseudonymizer(KEYRING, policy, offsets).pseudonymize(copy.deepcopy(ds))
    return result.dataset, result.date_offset_days, patient


def _execute(example: Example, folder: Path, coverage: Coverage) -> None:
    """Run every case of an example and check every expected outcome."""
    policy = _load(example, folder)
    assert example.cases, f"{example.where}: no <!-- expected ... --> comment after the example"
    for rule in policy.rules:
        coverage.conditions.update(c.kind for c in rule.conditions)
    for number, case in enumerate(example.cases, 1):
        ds = dataset()
        _given(ds, case.get("given") or {})
        out, offset, patient = _run(policy, ds)
        for name, spec in case["expect"].items():
            coverage.record(policy, ds, name)
            before, label = _value(ds, name)
            after, _ = _value(out, name)
            _check(f"{example.where} case {number}", label, spec, before, after, offset, patient)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_policy_examples_do_what_they_say(example: Example, tmp_path: Path) -> None:
    _execute(example, tmp_path, Coverage())


def test_every_action_selector_and_condition_has_a_checked_example(tmp_path: Path) -> None:
    coverage = Coverage()
    for example in EXAMPLES:
        _execute(example, tmp_path, coverage)
    # temporal and instance_uid are resolved when the policy is loaded: they decide as the
    # action they stand for (shift_date, remap_uid...), checked on the attribute they select.
    resolved = {Action.TEMPORAL, Action.INSTANCE_UID}
    assert set(Action) - resolved - coverage.actions == set()
    assert set(SPECIFICITY) - coverage.kinds == set()
    assert {"equals", "matches", "in", "present"} <= coverage.conditions
    used = {a for e in EXAMPLES for a in re.findall(r"action: (\w+)", e.text)}
    assert {a.value for a in Action} <= used, "every action appears in an example"


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 6
