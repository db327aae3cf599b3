"""The ``pixels:`` section of a policy, compiled: device rules with their conditions, and the
detector's settings. :mod:`pseudo.pixels.rules` applies them to a file."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pseudo.policy.model import PixelRule, PixelSettings, Region
from pseudo.policy.selectors import CompiledCondition, compile_conditions

#: The built-in detector settings, which a policy's ``pixels.detector`` overrides key by key.
DEFAULT_MARGIN = 2
DEFAULT_MAX_ANATOMY_LOSS = 0.25
DEFAULT_MAX_TEXT_FRACTION = 0.25


@dataclass(frozen=True)
class CompiledPixelRule:
    """One device rule, ready to test a file and give its regions."""

    name: str
    where: str  # policy file and line, for explain and reports
    conditions: tuple[CompiledCondition, ...]
    regions: tuple[Region, ...]
    detector: bool
    quarantine: str | None
    why: str | None

    def describe(self) -> str:
        """What the rule does, in one line (``pseudo policy explain``)."""
        if self.quarantine is not None:
            return f"quarantine ({self.quarantine})"
        parts = [describe_region(r) for r in self.regions]
        if self.detector:
            parts.append("and the detector scans the image")
        return "blank " + ", ".join(parts) if self.regions else "the detector scans the image"


def describe_region(region: Region) -> str:
    """A region in words: ``box [x1, y1, x2, y2]`` or ``top 40 rows``."""
    if region.box is not None:
        return "box [" + ", ".join(str(v) for v in region.box) + "]"
    for side, unit in (("top", "rows"), ("bottom", "rows"), ("left", "columns")):
        if getattr(region, side):
            return f"{side} {getattr(region, side)} {unit}"
    return f"right {region.right} columns"


@dataclass(frozen=True)
class PixelPolicy:
    """How a policy protects pixel data: on or off, the rules (first match decides, the leaf
    policy's first) and the detector for the images no rule covers."""

    enabled: bool = True
    detector: bool = True
    margin: int = DEFAULT_MARGIN
    max_anatomy_loss: float = DEFAULT_MAX_ANATOMY_LOSS
    max_text_fraction: float = DEFAULT_MAX_TEXT_FRACTION
    rules: tuple[CompiledPixelRule, ...] = field(default=())

    def off(self) -> PixelPolicy:
        """The same policy with all pixel work skipped (``pseudo run --pixels off``)."""
        return replace(self, enabled=False)

    @property
    def condition_tags(self) -> frozenset[int]:
        """The attributes the rules read: a reader must not leave them out."""
        return frozenset(c.tag for rule in self.rules for c in rule.conditions)


def compile_pixel_rule(
    rule: PixelRule, where: str, table_keywords: dict[str, int]
) -> CompiledPixelRule:
    """Compile one rule (raises ValueError for a ``when`` naming no single attribute)."""
    return CompiledPixelRule(
        name=rule.name,
        where=where,
        conditions=compile_conditions(dict(rule.when), table_keywords),
        regions=tuple(rule.regions),
        detector=rule.detector,
        quarantine=rule.quarantine,
        why=rule.why,
    )


def merged(
    base: PixelPolicy, settings: PixelSettings, rules: list[CompiledPixelRule]
) -> PixelPolicy:
    """``base`` (the parent policies') with one policy file's section applied: its detector
    settings override, its rules come before the parents' (the more specific policy first)."""
    detector = settings.detector
    return PixelPolicy(
        enabled=base.enabled,
        detector=base.detector if detector.enabled is None else detector.enabled,
        margin=base.margin if detector.margin is None else detector.margin,
        max_anatomy_loss=(
            base.max_anatomy_loss
            if detector.max_anatomy_loss is None
            else detector.max_anatomy_loss
        ),
        max_text_fraction=(
            base.max_text_fraction
            if detector.max_text_fraction is None
            else detector.max_text_fraction
        ),
        rules=(*rules, *base.rules),
    )
