"""The fast header reader builds exactly the data set pydicom builds, or declines.

Every file at hand is read both ways: pydicom's bundled files, the public and canary corpora,
and every hostile case. Where :mod:`pseudo.io.headscan` accepts a file, its data set must equal
pydicom's element for element (tag, VR, length, raw value, position), with the same file meta,
preamble, encodings and pixel data position.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement

from pseudo.deid.engine import Pseudonymizer
from pseudo.findings import RejectedFile
from pseudo.io import dicomio
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.policy import load_policy
from pseudo.verify.check import finish
from pseudo.verify.recording import prepare, records_removed
from tests.conftest import CANARY, PUBLIC
from tests.hostile import CASES
from tests.synthetic import make_keyring


def _slow(path: Path) -> dicomio.Source | str:
    with mock.patch.object(dicomio, "_read_scanned", return_value=None):
        return _read(path)


def _read(path: Path) -> dicomio.Source | str:
    try:
        with quiet_pydicom():
            return dicomio.read_source(path)
    except (RejectedFile, dicomio.NotDicom) as exc:
        return f"{type(exc).__name__}: {exc}"


def _elements(ds: object) -> list[object]:
    found: list[object] = []
    for tag, element in ds._dict.items():  # type: ignore[attr-defined]
        if isinstance(element, RawDataElement):
            found.append(tuple(element))
        else:
            found.append((tag, element.VR, element.is_undefined_length, str(element.value)))
    return found


def _same(path: Path) -> bool:
    """Whether the fast reader accepted ``path``; assert it read what pydicom reads."""
    with quiet_pydicom():
        try:
            fast = dicomio._read_scanned(path)
        except Exception:
            fast = None
    slow = _slow(path)
    if fast is None:
        return False
    assert not isinstance(slow, str), f"{path.name}: pydicom refuses it ({slow})"
    a, b = fast.dataset, slow.dataset
    assert _elements(a) == _elements(b), path.name
    assert _elements(a.file_meta) == _elements(b.file_meta), path.name
    assert a.preamble == b.preamble
    assert a.original_encoding == b.original_encoding
    assert a.original_character_set == b.original_character_set
    assert a._character_set == b._character_set
    assert a.filename == b.filename
    assert fast.pixels == slow.pixels and fast.after_pixels == slow.after_pixels
    return True


def _corpus(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def test_pydicom_files_read_alike() -> None:
    files = _corpus(Path(pydicom.data.__file__).parent / "test_files")
    accepted = sum(_same(p) for p in files)
    assert accepted > len(files) // 3  # most files take the fast path


@pytest.mark.parametrize("root", [PUBLIC, CANARY], ids=["public", "canary"])
def test_corpus_files_read_alike(root: Path) -> None:
    files = _corpus(root)
    if not files:
        pytest.skip(f"corpus not found at {root} (the ../shared folder beside the repository)")
    accepted = sum(_same(p) for p in files)
    assert accepted > len(files) // 2


def test_hostile_files_read_alike_or_declined(tmp_path: Path) -> None:
    """A broken file either reads as pydicom reads it or is left to pydicom: the outcome of
    ``read_source`` (data set or reason) is the same as pydicom's path alone gives."""
    for case in CASES:
        path = tmp_path / case.name
        case.build(path)
        if path.is_dir() or not path.exists():
            continue
        if not _same(path):
            fast, slow = _read(path), _slow(path)
            if isinstance(slow, str):
                assert fast == slow, case.name


def _outcome(
    engine: Pseudonymizer, path: Path, drop: bool
) -> tuple[bytes, dict[str, str], list[dict[str, object]]]:
    """Output bytes, verification needles and findings of one file, read with or without
    leaving out the elements the policy only removes."""
    # Of what is left out, only what the verification reads is built (as ``pseudo run`` does).
    keep = records_removed
    source = dicomio.read_source(path, engine.droppable if drop else None, keep_dropped=keep)
    assert bool(source.dropped) <= drop
    pending = prepare(source.dataset, engine.policy)
    result = engine.pseudonymize(source.dataset, pending.recorder, source.dropped)
    data = dicomio.encode(result.dataset)
    findings, _ = finish(
        pending, result.dataset, result.relative_path, result.date_offset_days, data, engine.policy
    )
    needles = {key: needle.kind for key, needle in pending.needles.items.items()}
    return data, needles, [f.to_json() for f in findings]


@pytest.mark.parametrize("policy", ["default", "basic", "strict", "nidb-full"])
def test_leaving_out_removed_elements_changes_nothing(policy: str) -> None:
    """The reader may leave out what the policy only removes: the output bytes, what the
    verification looks for (in the same order) and what it finds are the same."""
    engine = Pseudonymizer(make_keyring(), load_policy(policy))
    files = _corpus(Path(pydicom.data.__file__).parent / "test_files")[::3] + _corpus(CANARY)[::4]
    dropped = 0
    with quiet_pydicom():
        for path in files:
            try:
                with_drop = _outcome(engine, path, True)
            except (RejectedFile, dicomio.NotDicom):
                continue
            dropped += len(dicomio.read_source(path, engine.droppable).dropped)
            assert with_drop == _outcome(engine, path, False), path.name
            assert list(with_drop[1]) == list(_outcome(engine, path, False)[1]), path.name
    assert dropped > (100 if policy == "default" else 0)
