"""Apply a compiled policy to a dataset, once over every attribute at every depth."""

from __future__ import annotations

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from pseudo.actions import HANDLERS, ElementRef
from pseudo.clean import IDENTIFYING_KEYWORDS, TextCleaner, _values, date_spellings
from pseudo.context import FileContext
from pseudo.findings import RejectedFile
from pseudo.policy.model import Action
from pseudo.private import SafePrivate
from pseudo.tags import standard_vr, tag_text

#: Deeper nesting than this is refused: no real object needs it, and a hostile file uses it.
MAX_DEPTH = 64


def element_vr(element: object, tag: int) -> str:
    """The VR to decide by: the file's explicit VR, else the dictionary's, else ``UN``."""
    vr = getattr(element, "VR", None)
    if vr in (None, "UN"):
        vr = standard_vr(tag) or vr or "UN"
    return vr.split(" or ")[0] if " or " in vr else vr


def attribute_name(tag: int) -> str:
    """Keyword of a standard attribute, else its ``(gggg,eeee)`` tag."""
    if (tag >> 16) & 1:
        return tag_text(tag)
    return keyword_for_tag(tag) or tag_text(tag)


class Walker:
    """Processes one dataset with one :class:`FileContext`."""

    def __init__(self, ctx: FileContext, original: Dataset) -> None:
        self.ctx = ctx
        self._identifying = self._snapshot(original) if ctx.policy.uses(Action.CLEAN) else []
        self._safe_private = (
            SafePrivate.load()
            if ctx.policy.private_table and ctx.policy.private_table.action is Action.CLEAN
            else None
        )
        self._depth = 0

    @staticmethod
    def _snapshot(ds: Dataset) -> list[str]:
        """Identifying values of the top level, taken before anything changes."""
        terms: list[str] = []
        for keyword in IDENTIFYING_KEYWORDS:
            try:
                element = ds.data_element(keyword)
                values = _values(element.value) if element is not None else []
            except Exception:
                continue  # an unreadable value cannot be looked for
            for text in values:
                terms.extend(date_spellings(text) if keyword == "PatientBirthDate" else [text])
                terms.extend(text.replace("^", " ").replace("=", " ").split())
        return terms

    def cleaner(self) -> TextCleaner:
        """The text cleaner of this dataset (built on first use)."""
        if self.ctx.cleaner is None:
            self.ctx.cleaner = TextCleaner(self._identifying)
        return self.ctx.cleaner

    def walk(self, ds: Dataset, prefix: str = "") -> None:
        """Apply the policy to every attribute of ``ds`` and, through actions, its sequences."""
        policy = self.ctx.policy
        private_seen = False
        for tag in list(ds.keys()):
            element = ds.get_item(tag)
            vr = element_vr(element, tag)
            decision = policy.decide(tag, vr)
            path = prefix + attribute_name(tag)
            if (tag >> 16) & 1:
                private_seen = True
                if decision.action is Action.CLEAN:
                    self._clean_private(ds, tag, vr, path)
                    continue
            HANDLERS[decision.action](ElementRef(ds, tag, vr, decision, path), self)
        if private_seen and self._safe_private is not None:
            self._safe_private.drop_orphan_creators(ds)

    def walk_sequence(self, ref: ElementRef) -> None:
        """Process every item of the sequence ``ref`` names."""
        try:
            items = ref.ds[ref.tag].value
        except Exception as exc:
            raise RejectedFile(
                f"{ref.path}: sequence cannot be parsed ({exc.__class__.__name__})"
            ) from exc
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise RejectedFile(f"{ref.path}: sequences nested deeper than {MAX_DEPTH} levels")
        try:
            for index, item in enumerate(items):
                self.walk(item, f"{ref.path}[{index}].")
        finally:
            self._depth -= 1

    def _clean_private(self, ds: Dataset, tag: int, vr: str, path: str) -> None:
        """Retain Safe Private: keep the attribute only if Table E.3.10-1 lists it."""
        assert self._safe_private is not None
        if self._safe_private.is_safe(ds, tag):
            return
        if not self._safe_private.is_creator(tag):
            del ds[tag]
