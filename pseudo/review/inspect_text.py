"""``pseudo inspect`` in a terminal: the Patient -> Study -> Series tree as indented lines.

Each level's details (modalities, dates, private creators, the attributes that differ) get a
line of their own and every line is wrapped to the terminal's width, long words (UIDs, paths)
broken at their separators: nothing is cropped, whatever the width.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pseudo.review.lines import wrap_at

#: Instances listed under a series in the terminal (all of them are in --json).
INSTANCES_SHOWN = 5
INDENT = "  "


def wrap(text: str, width: int, indent: str, hang: str = INDENT) -> list[str]:
    """``text`` wrapped to ``width``: words kept whole when they fit, long words broken."""
    return textwrap.wrap(
        text,
        width=max(width, len(indent) + len(hang) + 20),
        initial_indent=indent,
        subsequent_indent=indent + hang,
        break_on_hyphens=False,
    ) or [indent]


def _details(node: dict[str, Any]) -> list[str]:
    details = []
    if node["modalities"]:
        details.append("modalities: " + ", ".join(node["modalities"]))
    if node["date_range"]:
        details.append("dates: " + "..".join(dict.fromkeys(node["date_range"])))
    if node["private_creators"]:
        details.append("private: " + ", ".join(node["private_creators"]))
    if node["differing"]:
        details.append("differs: " + ", ".join(node["differing"]))
    return details


def _relative(file: str, root: Path) -> str:
    try:
        return str(Path(file).relative_to(root))
    except ValueError:
        return file


def _folder(instances: list[dict[str, Any]]) -> Path | None:
    """The folder holding every instance file, when they share one."""
    folders = {Path(instance["file"]).parent for instance in instances}
    return folders.pop() if len(folders) == 1 else None


def node_lines(node: dict[str, Any], width: int, root: Path, depth: int = 0) -> Iterator[str]:
    """One node and its children, indented by level."""
    indent = INDENT * depth
    if node["level"] == "instance":
        number = f"#{node['instance_number']} " if node.get("instance_number") else ""
        yield from wrap(f"instance {number}{node['label']}", width, indent)
        yield from wrap_at("file: " + _relative(node["file"], root), "/", width, indent + INDENT)
        return
    head = f"{node['level']} {node['label']} ({node['instances']} instances)"
    yield from wrap(head, width, indent)
    for detail in _details(node):
        yield from wrap(detail, width, indent + INDENT)
    children = node.get("children", [])
    limit = INSTANCES_SHOWN if children and children[0]["level"] == "instance" else len(children)
    if limit < len(children) or (children and children[0]["level"] == "instance"):
        folder = _folder(children)
        if folder is not None:
            yield from wrap_at(
                "folder: " + _relative(str(folder), root), "/", width, indent + INDENT
            )
            root = folder
    for child in children[:limit]:
        yield from node_lines(child, width, root, depth + 1)
    if len(children) > limit:
        more = f"... {len(children) - limit} more instances (all in --json)"
        yield from wrap(more, width, indent + INDENT)


def inspect_lines(root: Path, patients: list[dict[str, Any]], width: int) -> Iterator[str]:
    """The whole tree under ``root``, wrapped to ``width`` columns."""
    yield from wrap(str(root), width, "")
    base = root if root.is_dir() else root.parent
    for patient in patients:
        yield from node_lines(patient, width, base, 1)
