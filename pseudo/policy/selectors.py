"""Compiled selectors and conditions of policy rules.

A selector has a *static* part, known from the tag and VR alone (a tag pattern, the private
groups, a VR), and may have a *dynamic* part that needs the attribute's surroundings (its
private creator, the sequence items above it). Conditions (``when``) look at the top level of
the file being processed and are evaluated once per file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from pseudo.dicom.private import creator_of
from pseudo.dicom.tags import TagPattern, keyword_tag, parse_tag_pattern, tag_text
from pseudo.io.pydicom_internals import dictionary_entries, repeater_entries

#: Specificity of selector kinds: the most specific rule about an attribute decides.
SPECIFICITY = {"path": 5, "exact": 4, "creator": 4, "pattern": 3, "private": 2, "vr": 1}
ANY_TAG = TagPattern(0, 0, "(xxxx,xxxx)")
_SEGMENT = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<index>\*|\d+)\])?$")

Parents = tuple[tuple[int, int], ...]


class SelectorError(ValueError):
    """A selector or condition that cannot be compiled."""


def resolve_name(text: str, extra_keywords: dict[str, int]) -> TagPattern:
    """A keyword, tag or tag pattern as a :class:`TagPattern`."""
    pattern = parse_tag_pattern(text)
    if pattern is not None:
        return pattern
    tag = keyword_tag(text) or extra_keywords.get(text)
    if tag is None:
        raise SelectorError(f"unknown keyword {text!r}{_suggest(text)}")
    return TagPattern(0xFFFFFFFF, tag, tag_text(tag))


def _suggest(keyword: str) -> str:
    import difflib

    names = [entry[4] for entry in dictionary_entries().values() if entry[4]]
    close = difflib.get_close_matches(keyword, names, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


@dataclass(frozen=True)
class PathStep:
    """One sequence above the attribute: its tag and the item index (None: any item)."""

    tag: int
    index: int | None


@dataclass(frozen=True)
class CompiledSelector:
    """A selector ready to match attributes."""

    text: str
    kind: str
    pattern: TagPattern = ANY_TAG
    private_only: bool = False
    vr: str | None = None
    creator: str | None = None
    parents: tuple[PathStep, ...] | None = None

    @property
    def specificity(self) -> int:
        """Rank of the selector's kind (see :data:`SPECIFICITY`)."""
        return SPECIFICITY[self.kind]

    @property
    def dynamic(self) -> bool:
        """Whether matching needs more than the tag and VR."""
        return self.creator is not None or self.parents is not None

    def static_match(self, tag: int, vr: str) -> bool:
        """Whether the tag and VR fit the selector's static part."""
        if not self.pattern.matches(tag):
            return False
        if self.private_only and not (tag >> 16) & 1:
            return False
        return self.vr is None or self.vr == vr

    def dynamic_match(self, ds: Dataset | None, tag: int, parents: Parents) -> bool:
        """Whether the attribute's creator and sequence path fit (call after static_match)."""
        if self.parents is not None:
            if len(parents) != len(self.parents):
                return False
            for step, (seq_tag, index) in zip(self.parents, parents, strict=True):
                if step.tag != seq_tag or (step.index is not None and step.index != index):
                    return False
        if self.creator is not None:
            if ds is None:
                return False
            if 0x10 <= tag & 0xFFFF <= 0xFF:  # the creator element itself
                return str(ds[tag].value).strip() == self.creator
            return creator_of(ds, tag) == self.creator
        return True

    def matches(self, tag: int, vr: str, ds: Dataset | None, parents: Parents) -> bool:
        """Static and dynamic match together."""
        return self.static_match(tag, vr) and (
            not self.dynamic or self.dynamic_match(ds, tag, parents)
        )

    def overlaps(self, other: CompiledSelector) -> bool:
        """Whether some attribute could match both (for conflict detection)."""
        common = self.pattern.mask & other.pattern.mask
        if (self.pattern.value ^ other.pattern.value) & common:
            return False
        if self.vr and other.vr and self.vr != other.vr:
            return False
        if (self.private_only or other.private_only) and not (
            _may_be_odd(self.pattern) and _may_be_odd(other.pattern)
        ):
            return False
        return (self.creator, self.parents) == (other.creator, other.parents)


def _may_be_odd(pattern: TagPattern) -> bool:
    return not (pattern.mask >> 16) & 1 or bool((pattern.value >> 16) & 1)


def _parse_path(
    text: str, extra_keywords: dict[str, int]
) -> tuple[tuple[PathStep, ...], TagPattern]:
    segments = text.split(".")
    steps = []
    for segment in segments[:-1]:
        match = _SEGMENT.match(segment.strip())
        if match is None:
            raise SelectorError(f"path {text!r}: cannot read {segment!r}")
        pattern = resolve_name(match["name"], extra_keywords)
        if not pattern.is_exact:
            raise SelectorError(f"path {text!r}: {match['name']!r} must name one sequence")
        try:
            if dictionary_VR(pattern.value) != "SQ":
                raise SelectorError(f"path {text!r}: {match['name']} is not a sequence")
        except KeyError:
            pass  # private or unknown sequences are allowed
        index = match["index"]
        steps.append(PathStep(pattern.value, None if index in (None, "*") else int(index)))
    leaf = _SEGMENT.match(segments[-1].strip())
    if leaf is None or leaf["index"] is not None:
        raise SelectorError(f"path {text!r}: the last part must name an attribute")
    return tuple(steps), resolve_name(leaf["name"], extra_keywords)


def compile_selector(spec: Any, extra_keywords: dict[str, int]) -> CompiledSelector:
    """Compile one selector: a string (keyword, tag, pattern, path, ``private``) or a mapping."""
    from pseudo.policy.model import Selector

    if isinstance(spec, str):
        text = spec.strip()
        if text == "private":
            return CompiledSelector(text, "private", private_only=True)
        if "." in text or "[" in text:
            steps, leaf = _parse_path(text, extra_keywords)
            return CompiledSelector(text, "path", pattern=leaf, parents=steps)
        pattern = resolve_name(text, extra_keywords)
        _check_pattern(pattern, text)
        return CompiledSelector(text, "exact" if pattern.is_exact else "pattern", pattern=pattern)
    assert isinstance(spec, Selector)
    text = spec.model_dump_json(exclude_none=True)
    kind, pattern = "vr", ANY_TAG
    parents: tuple[PathStep, ...] | None = None
    if spec.path:
        parents, pattern = _parse_path(spec.path, extra_keywords)
        kind = "path"
    elif spec.tag:
        pattern = resolve_name(spec.tag, extra_keywords)
        if spec.creator is None:
            _check_pattern(pattern, spec.tag)
        kind = "exact" if pattern.is_exact else "pattern"
    if spec.creator is not None:
        kind = "path" if kind == "path" else "creator"
    if spec.vr is not None:
        from pydicom.valuerep import VR

        if spec.vr not in {member.value for member in VR}:
            raise SelectorError(f"unknown VR {spec.vr!r}")
    return CompiledSelector(
        text,
        kind,
        pattern=pattern,
        private_only=spec.creator is not None,
        vr=spec.vr,
        creator=spec.creator.strip() if spec.creator else None,
        parents=parents,
    )


def _check_pattern(pattern: TagPattern, text: str) -> None:
    """A pattern for a public group must match something in the data dictionary."""
    if pattern.is_exact or (_may_be_odd(pattern) and (pattern.mask >> 16) & 1):
        return
    if any(pattern.matches(tag) for tag in dictionary_entries()):
        return
    if any(pattern.matches(int(mask.replace("x", "0"), 16)) for mask in repeater_entries()):
        return
    raise SelectorError(f"tag pattern {text!r} matches no attribute of the data dictionary")


@dataclass(frozen=True)
class CompiledCondition:
    """One test of ``when``: an attribute of the top level and what it must satisfy."""

    name: str
    tag: int
    kind: str  # equals | matches | present | in
    expected: Any

    def holds(self, ds: Dataset) -> bool:
        """Evaluate on the original top-level dataset."""
        values = _values(ds, self.tag)
        if self.kind == "present":
            return bool(values) is bool(self.expected)
        if self.kind == "equals":
            return self.expected in values
        if self.kind == "in":
            return any(v in self.expected for v in values)
        regex: re.Pattern[str] = self.expected
        return any(regex.search(v) for v in values)

    def describe(self) -> str:
        """Human-readable form, for ``policy explain``."""
        if self.kind == "matches":
            return f"{self.name} matches {self.expected.pattern!r}"
        return f"{self.name} {self.kind} {self.expected!r}"


def _values(ds: Dataset, tag: int) -> list[str]:
    if tag not in ds:
        return []
    try:
        value = ds[tag].value
    except Exception:
        return []
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    return [text] if text else []


def compile_conditions(
    when: dict[str, Any], extra_keywords: dict[str, int]
) -> tuple[CompiledCondition, ...]:
    """Compile the ``when`` mapping of a rule."""
    from pseudo.policy.model import Condition

    result = []
    for name, test in when.items():
        pattern = resolve_name(name, extra_keywords)
        if not pattern.is_exact:
            raise SelectorError(f"when: {name!r} must name one attribute")
        if isinstance(test, str):
            result.append(CompiledCondition(name, pattern.value, "equals", test))
            continue
        assert isinstance(test, Condition)
        if test.equals is not None:
            result.append(CompiledCondition(name, pattern.value, "equals", test.equals))
        elif test.matches is not None:
            result.append(
                CompiledCondition(name, pattern.value, "matches", re.compile(test.matches))
            )
        elif test.present is not None:
            result.append(CompiledCondition(name, pattern.value, "present", test.present))
        else:
            result.append(CompiledCondition(name, pattern.value, "in", tuple(test.one_of or ())))
    return tuple(result)
