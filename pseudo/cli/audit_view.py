"""What ``pseudo audit show`` prints: the records chosen, as blocks, a table, CSV or JSON.

A data-protection officer reads the log to answer "who opened which pseudonym, when, why, with
which key slot, and what happened". Every one of those fields must be readable whole:

* on a terminal of 120 columns or more, a table (cells fold, never cut);
* on a narrower terminal, and when stdout is not a terminal, one block per record, one field a
  line, each value on one line (a long UID is wrapped by the terminal, not cut or split by
  inserted line breaks, so it can be copied);
* ``--csv`` and ``--json`` for spreadsheets and scripts.

Every value from the log (a requester, a reason, a subject) is printed through
:func:`~pseudo.cli.common.printable`: markup or escape codes in it are shown, never obeyed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from keystore.actions import AuditAction
from pseudo.cli.common import UserError, printable, spreadsheet_safe

#: A terminal at least this wide gets a table; a narrower one gets blocks.
TABLE_MIN_WIDTH = 120

#: The columns of ``--csv``, in order.
CSV_FIELDS = (
    "seq",
    "timestamp",
    "action",
    "outcome",
    "project",
    "actor",
    "os_user",
    "reason",
    "subject",
    "slot",
    "slot_requested",
    "details",
    "authenticated_by",
    "hash",
)

#: A spreadsheet takes a cell starting with one of these for a formula.


@dataclass(frozen=True)
class Selection:
    """Which records to show: every condition given must hold."""

    project: str | None = None
    since: datetime | None = None
    action: str | None = None
    actor: str | None = None
    last: int | None = None

    def keep(self, record: dict[str, Any]) -> bool:
        """True when ``record`` (as :func:`record_dict` makes it) meets every condition."""
        if self.project is not None and record["project"] != self.project:
            return False
        if self.action is not None and record["action"] != self.action:
            return False
        if self.since is not None and parse_time(record["timestamp"]) < self.since:
            return False
        if self.actor is not None:
            who = f"{record['actor']}\n{record['details'].get('os_user') or ''}"
            if self.actor.casefold() not in who.casefold():
                return False
        return True

    def apply(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records that meet the conditions, the last ``last`` of them if given."""
        chosen = [record for record in records if self.keep(record)]
        if self.last is not None:
            chosen = chosen[-self.last :] if self.last > 0 else []
        return chosen


def parse_time(value: str) -> datetime:
    """An ISO date or date and time; one without a time zone is taken as UTC."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def since_option(value: str | None) -> datetime | None:
    """``--since``: a date (2026-12-01) or a date and time (2026-12-01T09:30, UTC unless a
    zone is given), else :class:`UserError`."""
    if value is None:
        return None
    try:
        return parse_time(value.strip())
    except ValueError as exc:
        raise UserError(
            f"--since {printable(value)!r}: expected a date such as 2026-12-01 "
            "or a date and time such as 2026-12-01T09:30"
        ) from exc


def action_option(value: str | None) -> str | None:
    """``--action``: one of the actions of the log (e.g. ``reidentify``), else
    :class:`UserError` listing them."""
    if value is None:
        return None
    known = [action.value for action in AuditAction]
    if value.strip().lower() not in known:
        raise UserError(f"--action {printable(value)!r}: use one of {', '.join(known)}")
    return value.strip().lower()


def record_dict(row: Any) -> dict[str, Any]:
    """One audit row as ``audit show --json`` prints it."""
    return {
        "seq": row.seq,
        "timestamp": row.timestamp,
        "actor": row.actor,
        "action": row.action,
        "project": row.project,
        "subject": row.subject,
        "reason": row.reason,
        "outcome": row.outcome,
        "details": json.loads(row.details),
        "hash": row.hash,
        "authenticated_by": f"{row.mac_key}/{row.mac_slot}" if row.mac_key else None,
    }


def _time(timestamp: str) -> str:
    """A stored timestamp shown in UTC to the second: ``2026-12-03 00:45:33 UTC``."""
    try:
        moment = parse_time(timestamp).astimezone(UTC)
    except ValueError:
        return timestamp
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _other_details(details: dict[str, Any]) -> str:
    """The details not shown on a line of their own, as ``key=value`` pairs."""
    shown = {"os_user", "slot", "slot_requested"}
    pairs = [
        f"{key}={_value(value)}"
        for key, value in sorted(details.items())
        if key not in shown and value is not None
    ]
    return ", ".join(pairs)


def _value(value: object) -> str:
    """A detail's value: a number or text as it is, a list or mapping as compact JSON."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _slot(details: dict[str, Any]) -> str:
    """The key slot opened, and the one asked for when it differs."""
    opened, asked = details.get("slot"), details.get("slot_requested")
    if opened and asked and asked != opened:
        return f"{opened} (asked for {asked})"
    if opened:
        return str(opened)
    return f"none opened (asked for {asked})" if asked else ""


def block_fields(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The labelled lines of a record's block; empty fields are left out."""
    details = record["details"]
    who = "requester" if record["action"] == AuditAction.REIDENTIFY else "actor"
    fields = [
        ("project", record["project"] or ""),
        (who, record["actor"]),
        ("os user", details.get("os_user") or ""),
        ("reason", record["reason"] or ""),
        ("subject", record["subject"] or ""),
        ("key slot", _slot(details)),
        ("details", _other_details(details)),
        ("authenticated", record["authenticated_by"] or ""),
    ]
    return [(label, str(value)) for label, value in fields if value]


def blocks(records: Iterable[dict[str, Any]]) -> Iterable[Text]:
    """One block per record: a heading line (number, time, action, outcome) and one line per
    field, each value whole on its line."""
    for index, record in enumerate(records):
        if index:
            yield Text("")
        outcome_style = "green" if record["outcome"] == "success" else "yellow"
        yield Text.assemble(
            (f"#{record['seq']}", "bold"),
            "  ",
            _time(record["timestamp"]),
            "  ",
            (printable(record["action"]), "bold"),
            "  ",
            (printable(record["outcome"]), outcome_style),
        )
        for label, value in block_fields(record):
            yield Text.assemble(("  " + f"{label}:".ljust(15), "dim"), printable(value))


def table(records: Iterable[dict[str, Any]]) -> Table:
    """The records as a table for a wide terminal; cells fold, never cut."""
    grid = Table(show_lines=False)
    for name in ("#", "time (UTC)", "action", "outcome", "project", "actor", "reason", "subject"):
        grid.add_column(name, overflow="fold")
    grid.add_column("key slot", overflow="fold")
    for record in records:
        grid.add_row(
            str(record["seq"]),
            _time(record["timestamp"]).removesuffix(" UTC"),
            *(
                Text(printable(value))
                for value in (
                    record["action"],
                    record["outcome"],
                    record["project"] or "",
                    record["actor"],
                    record["reason"] or "",
                    record["subject"] or "",
                    _slot(record["details"]),
                )
            ),
        )
    return grid


def use_table(console: Console) -> bool:
    """A table only on a terminal wide enough for it; blocks anywhere else."""
    return console.is_terminal and console.width >= TABLE_MIN_WIDTH


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula."""
    return spreadsheet_safe("" if value is None else str(value))


def to_csv(records: Iterable[dict[str, Any]]) -> str:
    """The records as CSV with a header row (:data:`CSV_FIELDS`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for record in records:
        details = record["details"]
        flat = {
            **record,
            "os_user": details.get("os_user"),
            "slot": details.get("slot"),
            "slot_requested": details.get("slot_requested"),
            "details": _other_details(details),
        }
        writer.writerow([_cell(flat.get(name)) for name in CSV_FIELDS])
    return buffer.getvalue()
