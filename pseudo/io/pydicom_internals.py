"""Every use of pydicom's private API, in one place.

pydicom keeps some of what pseudo needs behind underscores: a data set's element mapping
(``Dataset._dict``, read without converting raw elements), the data dictionaries
(``pydicom._dicom_dict``) and the stored validation modes (``config.settings._*``). A pydicom
upgrade that changes one of them breaks here, and ``tests/test_pydicom_internals.py`` says
what is relied on.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from pydicom import config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

#: ``new_raw_element((tag, VR, length, value, value_tell, is_implicit_VR, is_little_endian,
#: True, False))`` is ``RawDataElement(tag, VR, length, value, value_tell, is_implicit_VR,
#: is_little_endian)``: the named tuple made by ``tuple.__new__`` without its ``__new__``, a
#: Python function that cost about as much as the rest of reading an element (the readers make
#: hundreds a file). Relies on its nine fields, the last two ``is_raw`` and ``is_buffered``.
new_raw_element: Callable[[tuple[Any, ...]], RawDataElement] = functools.partial(
    tuple.__new__, RawDataElement
)


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log: they can quote identifying values.

    pydicom's value validation is switched off meanwhile: in its default mode it only warns,
    and those warnings are silenced here, so it would cost time and change nothing. The state
    is process-wide, so is this: the first of overlapping uses (nested, or in other threads)
    silences, the last one restores.
    """
    global _quiet_depth, _quiet_restore
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_restore = _silence()
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_restore is not None:
                _quiet_restore()
                _quiet_restore = None


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_restore: Callable[[], None] | None = None


def _silence() -> Callable[[], None]:
    """Silence pydicom; return what restores it as it was."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    # setLevel, not an assignment: it also clears what every logger has cached of its
    # effective level, without which a warning logged before would stay enabled here
    logger.setLevel(logging.CRITICAL + 1)
    settings = config.settings
    # The stored modes (as pydicom's own disable_value_validation keeps them: an unset mode
    # stays unset); a caller that asked pydicom to refuse invalid values keeps that.
    stored = settings._reading_validation_mode, settings._writing_validation_mode
    if config.RAISE not in (settings.reading_validation_mode, settings.writing_validation_mode):
        settings.reading_validation_mode = settings.writing_validation_mode = config.IGNORE
    filters = warnings.catch_warnings()
    filters.__enter__()
    warnings.simplefilter("ignore")

    def restore() -> None:
        filters.__exit__(None, None, None)
        settings._reading_validation_mode, settings._writing_validation_mode = stored
        logger.setLevel(level)

    return restore


def element_map(ds: Dataset) -> dict[BaseTag, Any]:
    """The data set's own mapping of tags to elements (``DataElement`` or, not yet converted,
    ``RawDataElement``): reading it does not convert raw elements, as ``ds[tag]`` would, and
    writing it stores an element (raw or not) without checks."""
    return cast("dict[BaseTag, Any]", ds._dict)


def element_at(ds: Dataset, tag: int) -> Any:
    """The element of ``tag`` in the data set's own mapping (see :func:`element_map`), or None:
    one call for the hot paths of the verification (a plain int is looked up as the tag it
    names; the tag objects of the mapping itself are found fastest)."""
    return ds._dict.get(tag)  # type: ignore[call-overload]


def character_set(ds: Dataset) -> str | list[str]:
    """The Python encodings ``ds`` decodes its text with (``Dataset._character_set``): those of
    its own Specific Character Set, else those it inherits from the data set it is nested in."""
    return ds._character_set


def inherit_character_set(ds: Dataset, encodings: str | list[str]) -> None:
    """Make ``ds`` decode text as an item nested in a data set whose character set is
    ``encodings`` would (``Dataset._parent_encoding``, which pydicom sets on the items of a
    sequence): it applies unless ``ds`` has a Specific Character Set of its own."""
    ds._parent_encoding = encodings


#: A data dictionary entry: (VR, VM, name, retired, keyword); retired is ``"Retired"`` or
#: ``""``, and the keyword is ``""`` for a few attributes that have none.
DictionaryEntry = tuple[str, str, str, str, str]


def dictionary_entries() -> dict[int, DictionaryEntry]:
    """pydicom's data dictionary (``pydicom._dicom_dict.DicomDictionary``): each public tag
    and its entry. The mapping itself, not a copy (entries added with
    ``pydicom.datadict.add_dict_entries`` are in it): do not change it."""
    from pydicom._dicom_dict import DicomDictionary

    return DicomDictionary


def repeater_entries() -> dict[str, DictionaryEntry]:
    """pydicom's dictionary of repeating groups (``pydicom._dicom_dict.RepeatersDictionary``):
    entries keyed by a tag mask of 8 hex digits with ``x`` for a repeating digit
    (``"60xx3000"``). The mapping itself, not a copy: do not change it."""
    from pydicom._dicom_dict import RepeatersDictionary

    return RepeatersDictionary


def registered_uids() -> frozenset[str]:
    """Every UID that PS3.6 registers (Tables A-1 and A-2: SOP classes, transfer syntaxes,
    well-known SOP instances and frames of reference, coding schemes, ...), from pydicom's copy
    of the standard's table (``pydicom._uid_dict.UID_dictionary``, private)."""
    from pydicom._uid_dict import UID_dictionary

    return frozenset(UID_dictionary)
