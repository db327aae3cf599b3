"""Which pixel rule applies to a file, and the boxes its regions make in that image.

The rules are data (the ``pixels:`` section of a policy, compiled by
:mod:`pseudo.policy.pixels`); their conditions read the input's own top-level attributes,
before pseudonymization (a device's Manufacturer is often removed from the output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from pseudo.pixels.boxes import Box
from pseudo.policy.model import Region
from pseudo.policy.pixels import CompiledPixelRule, PixelPolicy


@dataclass(frozen=True)
class PixelPlan:
    """What the pixel step does to one image, decided from its header alone."""

    #: the rule that matched, if any
    rule: CompiledPixelRule | None
    #: the rule's regions as boxes of this image (every frame)
    boxes: tuple[Box, ...]
    #: whether the detector scans the image
    detect: bool

    @property
    def quarantine(self) -> str | None:
        """The reason the matching rule refuses the file, if it does."""
        return self.rule.quarantine if self.rule is not None else None

    def describe(self) -> str:
        """In one line, for ``pseudo policy explain``."""
        if self.rule is None:
            return "no pixel rule applies: " + (
                "the detector scans the image" if self.detect else "the image is not examined"
            )
        return f"pixel rule {self.rule.name} ({self.rule.where}): {self.rule.describe()}"


def matching_rule(ds: Dataset, pixels: PixelPolicy) -> CompiledPixelRule | None:
    """The first rule whose every condition holds for ``ds`` (the input, not yet
    pseudonymized), or None."""
    for rule in pixels.rules:
        if all(condition.holds(ds) for condition in rule.conditions):
            return rule
    return None


def region_box(region: Region, rows: int, columns: int, source: str) -> Box | None:
    """``region`` as a box of a ``rows`` x ``columns`` image, clipped to it (None if it lies
    wholly outside the image)."""
    if region.box is not None:
        x1, y1, x2, y2 = region.box
    elif region.top is not None:
        x1, y1, x2, y2 = 0, 0, columns - 1, region.top - 1
    elif region.bottom is not None:
        x1, y1, x2, y2 = 0, rows - region.bottom, columns - 1, rows - 1
    elif region.left is not None:
        x1, y1, x2, y2 = 0, 0, region.left - 1, rows - 1
    else:
        x1, y1, x2, y2 = columns - int(region.right or 0), 0, columns - 1, rows - 1
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(columns - 1, x2), min(rows - 1, y2)
    if x1 > x2 or y1 > y2:
        return None
    return Box(x1, y1, x2, y2, None, source)


def plan(ds: Dataset, pixels: PixelPolicy) -> PixelPlan:
    """What happens to the pixels of ``ds`` (the input's header): the matching rule's boxes,
    and whether the detector scans the image (no rule matched, or the rule asks for it)."""
    rule = matching_rule(ds, pixels)
    if rule is None:
        return PixelPlan(None, (), pixels.detector)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    boxes = tuple(
        box
        for region in rule.regions
        if (box := region_box(region, rows, columns, f"rule:{rule.name}")) is not None
    )
    return PixelPlan(rule, boxes, rule.detector)


def rules_json(pixels: PixelPolicy) -> dict[str, Any]:
    """The pixel section of a policy as plain data (``pseudo policy explain PixelData``)."""
    if not pixels.enabled:
        summary = "not examined (--pixels off)"
    else:
        summary = (
            f"first matching rule blanks its regions; other images: detector "
            f"{'on' if pixels.detector else 'off'} (margin {pixels.margin} px, "
            f"anatomy lost at most {pixels.max_anatomy_loss:.0%}, text at most "
            f"{pixels.max_text_fraction:.0%} of a frame)"
        )
    return {
        "enabled": pixels.enabled,
        "detector": pixels.detector,
        "margin": pixels.margin,
        "summary": summary,
        "rules": [
            {
                "name": rule.name,
                "where": rule.where,
                "when": [c.describe() for c in rule.conditions],
                "does": rule.describe(),
            }
            for rule in pixels.rules
        ],
    }


def explain(pixels: PixelPolicy, ds: Dataset) -> dict[str, Any]:
    """What the pixel step does to the file ``ds``, as plain data."""
    if not pixels.enabled:
        return {"rule": None, "detector": False, "plan": "pixels not examined (--pixels off)"}
    decided = plan(ds, pixels)
    return {
        "rule": decided.rule.name if decided.rule is not None else None,
        "boxes": [[b.x1, b.y1, b.x2, b.y2] for b in decided.boxes],
        "detector": decided.detect,
        "plan": decided.describe(),
    }
