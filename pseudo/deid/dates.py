"""Parsing and shifting of DICOM dates (DA) and date-times (DT) by a whole number of days.

Only the calendar date moves: times, fractions of seconds and a DT's timezone suffix are kept
as they were, so every interval within a patient's record is preserved exactly. Partial values
(``YYYY``, ``YYYYMM``) are shifted as the first day of their period and written back with the
same precision. Values that are not real dates (``20230231``) raise :class:`InvalidDateError`;
the caller removes them rather than keep them.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DA_LEGACY = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$")


class InvalidDateError(ValueError):
    """A DA or DT value that is not a valid date."""


def _shift_ymd(year: str, month: str | None, day: str | None, days: int) -> str:
    try:
        original = date(int(year), int(month or 1), int(day or 1))
    except ValueError as exc:
        raise InvalidDateError(f"not a calendar date: {year}{month or ''}{day or ''}") from exc
    try:
        shifted = original + timedelta(days=days)
    except OverflowError as exc:
        raise InvalidDateError("date out of range after shifting") from exc
    text = f"{shifted.year:04d}"
    if month is not None:
        text += f"{shifted.month:02d}"
    if day is not None:
        text += f"{shifted.day:02d}"
    return text


def shift_da(value: str, days: int) -> str:
    """Shift one DA value (or a DA range ``A-B``, ``-B``, ``A-``) by ``days``.

    >>> shift_da("20230105", -10)
    '20221226'
    >>> shift_da("20230101-20230201", 30)
    '20230131-20230303'
    """
    value = value.strip()
    if not value:
        return value
    if "-" in value:
        start, _, end = value.partition("-")
        return "-".join(shift_da(part, days) if part else "" for part in (start, end))
    # DA has no partial form; the ACR-NEMA form YYYY.MM.DD is read and written as YYYYMMDD.
    match = _DA.match(value) or _DA_LEGACY.match(value)
    if not match:
        raise InvalidDateError(f"not a DA value: {value!r}")
    return _shift_ymd(match[1], match[2], match[3], days)


def shift_dt(value: str, days: int) -> str:
    """Shift one DT value (or a DT range) by ``days``, keeping time and timezone.

    >>> shift_dt("20130303081643.000000+0530", 2)
    '20130305081643.000000+0530'
    """
    value = value.strip()
    if not value:
        return value
    if value.count("-") and not _DT.match(value):
        # A range: the separator is a '-' that is not the sign of a timezone offset.
        for index, char in enumerate(value):
            if char == "-" and _is_range_split(value, index):
                start, end = value[:index], value[index + 1 :]
                return "-".join(shift_dt(part, days) if part else "" for part in (start, end))
    match = _DT.match(value)
    if not match:
        raise InvalidDateError(f"not a DT value: {value!r}")
    year, month, day, time_part, zone = match.groups()
    if time_part and (month is None or day is None):
        raise InvalidDateError(f"not a DT value: {value!r}")
    _check_time(time_part)
    if zone:
        _check_zone(zone)
    return _shift_ymd(year, month, day, days) + (time_part or "") + (zone or "")


def _is_range_split(value: str, index: int) -> bool:
    start, end = value[:index], value[index + 1 :]
    return (not start or bool(_DT.match(start))) and (not end or bool(_DT.match(end)))


def _check_time(time_part: str | None) -> None:
    if not time_part:
        return
    hours = int(time_part[0:2])
    minutes = int(time_part[2:4]) if len(time_part) >= 4 else 0
    seconds = int(time_part[4:6]) if len(time_part) >= 6 else 0
    if hours > 23 or minutes > 59 or seconds > 60:
        raise InvalidDateError(f"not a valid time of day: {time_part!r}")


def _check_zone(zone: str) -> None:
    hours, minutes = int(zone[1:3]), int(zone[3:5])
    if hours > 14 or minutes > 59:
        raise InvalidDateError(f"not a valid UTC offset: {zone!r}")


def shift_value(value: str, vr: str, days: int) -> str:
    """Shift a possibly multi-valued DA or DT string (values separated by backslashes)."""
    shift = shift_da if vr == "DA" else shift_dt
    return "\\".join(shift(part, days) for part in value.split("\\"))


def offset_in_range(digest: bytes, low: int, high: int) -> int:
    """Map a keyed digest to a whole number of days in ``[low, high]``, never zero.

    The digest is reduced modulo the number of allowed values with 128 bits of input, so the
    bias is negligible (below 2**-100).
    """
    allowed = high - low + 1 - (1 if low <= 0 <= high else 0)
    if allowed <= 0:
        raise ValueError("the date shift range allows no non-zero offset")
    index = int.from_bytes(digest[:16], "big") % allowed
    offset = low + index
    if low <= 0 <= high and offset >= 0:
        offset += 1
    return offset
