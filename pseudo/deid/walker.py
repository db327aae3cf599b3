"""Apply a compiled policy to a dataset, once over every attribute at every depth."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from pseudo.deid.actions import HANDLERS, ElementRef, clean_text
from pseudo.deid.clean import (
    IDENTIFYING_KEYWORDS,
    TextCleaner,
    date_spellings,
    name_terms,
)
from pseudo.deid.context import FileContext
from pseudo.dicom.private import drop_orphan_creators
from pseudo.dicom.tags import attribute_name, element_vr
from pseudo.dicom.vr import TEXT_VRS
from pseudo.findings import RejectedFile
from pseudo.io.pydicom_internals import character_set, element_map, inherit_character_set
from pseudo.policy.clean_patterns import DEFAULT_PATTERNS
from pseudo.policy.compiled import CODE_ACTIONS, Decision
from pseudo.policy.conditions import CONDITION_TAGS, dependents_to_remove
from pseudo.policy.iod import IodTypes
from pseudo.policy.model import Action
from pseudo.policy.selectors import Parents

#: Top-level elements left out by the reader (see :meth:`Pseudonymizer.droppable`).
Dropped = Mapping[BaseTag, DataElement | RawDataElement]


class Recorder(Protocol):
    """Told of every data set the walk enters, before any action changes it, and called for
    every attribute the policy does not keep, with its decision and the sequences above it,
    before the action changes it."""

    def __call__(
        self, ds: Dataset, tag: int, vr: str, decision: Decision, parents: Parents = ()
    ) -> None: ...

    def enter(self, ds: Dataset, parents: Parents = ()) -> None:
        """The walk enters ``ds`` (the top level, or an item at ``parents``)."""

    def removed(self, holder: Dataset, dropped: Dropped) -> None:
        """Told once, before the walk, of the top-level elements the reader left out (all
        removed by the policy whatever their value), held by ``holder``."""


#: Deeper nesting than this is refused: no real object needs it, and a hostile file uses it.
MAX_DEPTH = 64
IDENTIFYING_TAGS = frozenset(t for t in map(tag_for_keyword, IDENTIFYING_KEYWORDS) if t)
BIRTH_DATE = 0x00100030


def _sop_class(ds: Dataset) -> str | None:
    """The SOP Class UID of the file (None if absent or unreadable)."""
    try:
        value = ds.get("SOPClassUID")
    except Exception:
        return None
    return str(value).strip() or None if value is not None else None


def _frame_increment_targets(ds: Dataset) -> frozenset[int]:
    """The tags that the file's Frame Increment Pointer names (the frame vectors a multi-frame
    object needs, whatever its IOD; empty if absent or unreadable)."""
    try:
        value = ds.get("FrameIncrementPointer")
    except Exception:
        return frozenset()
    if value is None:
        return frozenset()
    values = value if isinstance(value, MultiValue | list) else [value]
    try:
        return frozenset(int(tag) for tag in values)
    except (TypeError, ValueError):
        return frozenset()


def _holder(ds: Dataset, dropped: Dropped) -> Dataset:
    """The dropped elements in a data set of their own, decoded as ``ds`` decodes its own."""
    holder = Dataset(dict(dropped))
    implicit, little = ds.original_encoding
    encodings = character_set(ds)
    holder.set_original_encoding(implicit, little, encodings)
    inherit_character_set(holder, encodings)
    return holder


@dataclass
class _PendingClean:
    ref: ElementRef
    element: DataElement


class Walker:
    """Processes one dataset with one :class:`FileContext`.

    Free-text cleaning is deferred to the end of the walk, so that it knows every identifying
    value of the file (names, IDs, institutions at any depth), whatever their order.
    """

    def __init__(
        self,
        ctx: FileContext,
        original: Dataset,
        recorder: Recorder | None = None,
        dropped: Dropped | None = None,
    ) -> None:
        self.ctx = ctx
        self._recorder = recorder
        #: Top-level elements removed before the walk (see Pseudonymizer.droppable): only the
        #: recorder must still see them, handed over whole before the walk.
        self._dropped = dropped if recorder is not None and dropped else None
        policy = ctx.policy
        self._active = policy.active_rules(original) if policy.has_conditions else frozenset()
        self._record_terms = policy.uses(Action.CLEAN)
        self._terms: list[str] = []
        self._pending: list[_PendingClean] = []
        self._cleaning = 0
        self._depth = 0
        self._sop_class = _sop_class(original)
        self._pointed = _frame_increment_targets(original)
        self._resolved: dict[tuple[int, str, tuple[int, ...]], Decision] = {}

    # -- the walk ------------------------------------------------------------------------
    def walk(self, ds: Dataset) -> None:
        """Apply the policy to every attribute of ``ds``, then clean the free text."""
        if self._dropped is not None and self._recorder is not None:
            self._recorder.removed(_holder(ds, self._dropped), self._dropped)
        self._walk(ds, "", ())
        if self._pending:
            cleaner = self.cleaner()
            for pending in self._pending:
                clean_text(pending.ref, pending.element, cleaner)
            self._pending.clear()

    def _walk(self, ds: Dataset, prefix: str, parents: Parents) -> None:
        policy = self.ctx.policy
        creators = []
        elements = element_map(ds)
        tags = list(elements)
        recorder = self._recorder
        if recorder is not None:
            recorder.enter(ds, parents)
        for tag in tags:
            if (tag >> 16) & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
                # A private creator stays exactly as long as its block keeps an attribute.
                creators.append(tag)
                continue
            element = elements[tag]
            if element.__class__ is RawDataElement and element.value is None:
                element = ds.get_item(tag)  # an empty or deferred value: converted in place
            vr = element_vr(element, tag)
            if self._record_terms and tag in IDENTIFYING_TAGS:
                self._remember(ds, tag)
            decision = policy.decide(tag, vr, ds, parents, self._active)
            if decision.compound is not None:
                decision = self.resolve(decision, tag, vr, parents)
            elif decision.action is Action.CLEAN and (tag >> 16) & 1:
                decision = policy.private_decision(ds, tag, decision)  # a safe-private option
            if recorder is not None and decision.action is not Action.KEEP:
                recorder(ds, tag, vr, decision, parents)  # what is kept, enter() has
            if not self._cleaning:
                # Fast paths for most attributes: removed, or kept as they are (not sequences).
                if decision.action is Action.REMOVE:
                    del elements[tag]
                    continue
                if decision.action is Action.KEEP and vr != "SQ":
                    continue
            path = prefix + attribute_name(tag)
            ref = ElementRef(ds, tag, vr, decision, path, parents)
            if (
                self._cleaning
                and decision is policy.standard
                and vr in TEXT_VRS
                and not TextCleaner.is_structure(ds, tag, parents)
            ):
                # Inside a sequence being cleaned, text the table does not list is cleaned too;
                # codes and the structure of SR content items (Value Type...) are not.
                self.defer_clean(ref)
                continue
            HANDLERS[decision.action](ref, self)
        if creators:
            drop_orphan_creators(ds, creators)
        if CONDITION_TAGS.intersection(tags):
            self._follow_conditions(ds, {int(t) for t in tags}, prefix)

    # -- the object's IOD ----------------------------------------------------------------
    def resolve(self, decision: Decision, tag: int, vr: str, parents: Parents) -> Decision:
        """A combined code of Table E.1-1 resolved by the type of the attribute in the IOD of
        the file's SOP Class, where it sits (:mod:`pseudo.policy.iod`)."""
        assert decision.compound is not None
        path = tuple(int(parent) for parent, _ in parents)
        key = (int(tag), vr, path)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolution = IodTypes.load().resolve(
                decision.compound,
                self._sop_class,
                tuple(attribute_name(t) for t in path),
                attribute_name(tag),
                vr,
                pointed=not path and int(tag) in self._pointed,
            )
            action = CODE_ACTIONS[resolution.code]
            source = f"{decision.source}; {resolution.describe()}"
            if action is Action.DUMMY and vr == "SQ":
                # A required sequence cannot be emptied: its items are kept and every attribute
                # in them decided by the policy (instance UIDs remapped), as for X/Z/U*.
                action = Action.REMAP_UID
                source += " (a required sequence: items processed)"
            resolved = self._resolved[key] = Decision(action, source)
        return resolved

    def _follow_conditions(self, ds: Dataset, before: set[int], prefix: str) -> None:
        """Remove the attributes whose condition read an attribute the policy removed (unless
        the policy keeps them)."""
        after = {int(t) for t in element_map(ds)}
        for tag in dependents_to_remove(before, after):
            policy = self.ctx.policy
            decision = policy.decide(tag, element_vr(ds[tag], tag))
            if decision.action is Action.KEEP and decision is not policy.standard:
                continue  # kept by choice (an option or a rule): the policy's call, not ours
            del ds[tag]
            self.ctx.note(
                prefix + attribute_name(tag),
                "condition-removed",
                "removed with the attribute its PS3.3 condition depends on",
            )

    def walk_sequence(self, ref: ElementRef, *, cleaning: bool = False) -> None:
        """Process every item of the sequence ``ref`` names."""
        try:
            items = ref.ds[ref.tag].value
        except Exception as exc:
            raise RejectedFile(
                f"{ref.path}: sequence cannot be parsed ({exc.__class__.__name__})"
            ) from exc
        self._depth += 1
        self._cleaning += int(cleaning)
        if self._depth > MAX_DEPTH:
            tail = ".".join(ref.path.split(".")[-2:])
            raise RejectedFile(f"sequences nested deeper than {MAX_DEPTH} levels (at ...{tail})")
        try:
            for index, item in enumerate(items):
                self._walk(item, f"{ref.path}[{index}].", (*ref.parents, (ref.tag, index)))
        finally:
            self._depth -= 1
            self._cleaning -= int(cleaning)

    # -- free text -----------------------------------------------------------------------
    def _remember(self, ds: Dataset, tag: int) -> None:
        """Record an identifying value before any action changes it."""
        try:
            value = ds[tag].value
        except Exception:
            return  # an unreadable value cannot be looked for
        for text in name_terms(value, tag):  # name parts, IDs and their parts, phrases
            self._terms.extend(date_spellings(text) if tag == BIRTH_DATE else [text])

    def defer_clean(self, ref: ElementRef) -> None:
        """Clean this text attribute once the whole file has been seen."""
        try:
            element = ref.ds[ref.tag]
        except Exception:
            del ref.ds[ref.tag]
            self.ctx.note(ref.path, "unreadable-value", "value could not be decoded; removed")
            return
        self._pending.append(_PendingClean(ref, element))

    def cleaner(self) -> TextCleaner:
        """The text cleaner of this dataset (built once, from everything seen)."""
        if self.ctx.cleaner is None:
            patterns = self.ctx.policy.clean_patterns
            self.ctx.cleaner = TextCleaner(
                self._terms, DEFAULT_PATTERNS if patterns is None else patterns
            )
        return self.ctx.cleaner
