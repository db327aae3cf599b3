"""Wrapping for terminal output: long paths broken after their separators, never cropped."""

from __future__ import annotations

from collections.abc import Iterator


def wrap_at(text: str, sep: str, width: int, indent: str = "", hang: str = "  ") -> Iterator[str]:
    """``text`` on as many lines as it needs, broken after ``sep`` (a name too long for a line
    of its own is broken where the line ends); lines after the first are indented by ``hang``.
    """
    pieces = [piece + sep for piece in text.split(sep)]
    pieces[-1] = pieces[-1][: -len(sep)]
    line, lead = "", indent
    for piece in pieces:
        if line and len(lead) + len(line) + len(piece) > width:
            yield lead + line
            line, lead = "", indent + hang
        line += piece
        room = max(width - len(lead), 10)
        while len(line) > room:
            yield lead + line[:room]
            line, lead = line[room:], indent + hang
            room = max(width - len(lead), 10)
    yield lead + line
