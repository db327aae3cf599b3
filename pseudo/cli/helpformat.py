"""How ``pseudo ... --help`` is laid out: re-flowed paragraphs, whole option names.

The commands use click's plain help layout (see ``HELP_MARKUP`` in :mod:`pseudo.cli.app`),
which re-flows each paragraph of a docstring to the terminal (at most 80 columns) and puts a
long option name on a line of its own rather than truncating it. Two things are added here,
for every command in one place (:func:`tidy`):

* the command lists of ``pseudo --help`` and ``pseudo vault --help`` show each command's whole
  first paragraph, wrapped, where click would cut it at about 45 characters with ``...``;
* text is wrapped at spaces only, never after a hyphen, so ``--reid-passphrase-file`` or
  ``pseudo vault kdf-time`` is never split over two lines.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from typer._click import Context, HelpFormatter

#: Stands in for "-" while a text is wrapped (the wrapper breaks lines after "-" only).
_NO_BREAK_HYPHEN = "\u2011"


def _hold(text: str) -> str:
    return text.replace("-", _NO_BREAK_HYPHEN)


class PseudoHelpFormatter(HelpFormatter):
    """click's help formatter, wrapping lines at spaces only (never inside a hyphenated word)."""

    def write_text(self, text: str) -> None:
        """A paragraph of text, re-flowed to the width."""
        super().write_text(_hold(text))

    def write_dl(self, rows: Sequence[tuple[str, str]], *args: Any, **kwargs: Any) -> None:
        """A definition list (options, commands), each definition wrapped at spaces only."""
        super().write_dl([(term, _hold(text)) for term, text in rows], *args, **kwargs)

    def write(self, string: str) -> None:
        """Write ``string`` into the buffer with its hyphens restored."""
        super().write(string.replace(_NO_BREAK_HYPHEN, "-"))


class PseudoContext(Context):
    """A click context whose help is laid out by :class:`PseudoHelpFormatter`."""

    formatter_class = PseudoHelpFormatter


def first_paragraph(text: str | None) -> str:
    """The first paragraph of a docstring on one line (for a list of commands)."""
    paragraph = inspect.cleandoc(text or "").partition("\f")[0].split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def tidy(command: Any) -> Any:
    """Give ``command`` and every subcommand under it the help layout above; returns it."""
    command.context_class = PseudoContext
    if not getattr(command, "short_help", None) and getattr(command, "help", None):
        command.short_help = first_paragraph(command.help)
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)
    return command
