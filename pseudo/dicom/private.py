"""Private attributes: creators, blocks, and the safe private attributes of PS3.15 E.3.10-1.

A private attribute ``(gggg,xxEE)`` belongs to the block reserved by the creator element
``(gggg,00xx)``; the same creator can sit at different block numbers in different files, so
safety is decided by creator string and element byte, never by block number.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from pseudo.resources import policies_dir


def creator_tag(tag: int) -> int | None:
    """The tag of the creator element that reserves ``tag``'s block (None for creators)."""
    element = tag & 0xFFFF
    if element < 0x1000:
        return None
    return (tag & 0xFFFF0000) | (element >> 8)


def creator_of(ds: Dataset, tag: int) -> str | None:
    """The private creator string of ``tag`` in ``ds``, or None if it has no creator."""
    reserved = creator_tag(tag)
    if reserved is None or reserved not in ds:
        return None
    value = ds[reserved].value
    return str(value).strip() if value is not None else None


@dataclass(frozen=True)
class SafePrivate:
    """Table E.3.10-1: (group, creator, element byte) triples that are safe to retain."""

    entries: frozenset[tuple[int, str, int]]

    @classmethod
    @functools.cache
    def load(cls) -> SafePrivate:
        """Read the generated table."""
        path = policies_dir() / "ps3.15" / "table-e3-10-1.json"
        with path.open(encoding="utf-8") as handle:
            data: dict[str, Any] = json.load(handle)
        entries = set()
        for row in data["rows"]:
            group = int(row["tag"][1:5], 16)
            element = int(row["tag"][-3:-1], 16)
            entries.add((group, str(row["creator"]).strip(), element))
        return cls(frozenset(entries))

    @staticmethod
    def is_creator(tag: int) -> bool:
        """Whether ``tag`` is a private creator element ``(gggg,0010-00FF)``."""
        return 0x10 <= (tag & 0xFFFF) <= 0xFF

    def is_safe(self, ds: Dataset, tag: int) -> bool:
        """Whether the private attribute ``tag`` of ``ds`` is listed as safe."""
        if self.is_creator(tag):
            return True
        creator = creator_of(ds, tag)
        if creator is None:
            return False
        return (tag >> 16, creator, tag & 0xFF) in self.entries


def drop_orphan_creators(ds: Dataset, creators: Sequence[int]) -> None:
    """Remove the creator elements among ``creators`` whose block holds no attribute any more."""
    used = {creator_tag(int(tag)) for tag in ds.keys() if (tag >> 16) & 1}
    for tag in creators:
        if tag not in used and tag in ds:
            del ds[tag]
