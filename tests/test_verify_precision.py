"""The residual-PHI verification is precise: every kind of value planted into a correct output
is found, with its attribute path, and correct outputs are never quarantined by it (whole words
in text, no words in binary values, values the policy keeps are its choice)."""

from __future__ import annotations

import copy
import io
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from keystore.keyring import Keyring
from keystore.session import VaultSession
from pseudo.deid.engine import Pseudonymizer
from pseudo.policy import CompiledPolicy, load_policy
from pseudo.verify.check import finish
from pseudo.verify.finding import VerificationFinding
from pseudo.verify.matching import Matcher
from pseudo.verify.needles import Needles
from pseudo.verify.recording import Pending, prepare
from tests.conftest import OPERATOR, PUBLIC, SHARED, cli, make_vault

POLICIES = ["default", "basic", "strict", "nidb-anonymize", "nidb-full"]
CORPORA = {
    "public": PUBLIC,
    "phi-canary": SHARED / "corpus" / "phi-canary" / "dicom",
    "burned-in": SHARED / "corpus" / "burned-in" / "dicom",
}


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Keyring:
    """The keys of a fresh project."""
    with VaultSession(make_vault(tmp_path_factory.mktemp("precision") / "vault")) as session:
        return session.vault.unlock_operator("trial", OPERATOR)


@dataclass
class Pseudonymized:
    """One input pseudonymized in memory, with what its verification recorded."""

    source: Dataset  # the input, untouched
    pending: Pending
    output: Dataset
    relative_path: str
    offset: int
    policy: CompiledPolicy

    def findings(
        self,
        change: Callable[[Dataset], None] | None = None,
        relative_path: str | None = None,
    ) -> list[VerificationFinding]:
        """Verify the output (after ``change``), from its written bytes, as a run does."""
        if change is not None:
            change(self.output)
        buffer = io.BytesIO()
        self.output.save_as(buffer, enforce_file_format=True)
        found, _ = finish(
            self.pending,
            self.output,
            relative_path or self.relative_path,
            self.offset,
            buffer.getvalue(),
            self.policy,
        )
        return found


def pseudonymize(ds: Dataset, keyring: Keyring, policy: str = "default") -> Pseudonymized:
    """Pseudonymize a copy of ``ds`` with the verification's recorder."""
    compiled = load_policy(policy)
    source = copy.deepcopy(ds)
    work = copy.deepcopy(ds)
    pending = prepare(work, compiled)
    result = Pseudonymizer(keyring, compiled).pseudonymize(work, pending.recorder)
    return Pseudonymized(
        source, pending, result.dataset, result.relative_path, result.date_offset_days, compiled
    )


def leaks(findings: list[VerificationFinding]) -> dict[str, str]:
    """Path -> kind of every finding that quarantines."""
    return {f.path: f.kind for f in findings if f.severity == "leak"}


@pytest.fixture()
def canary_file(canary_dir: Path) -> Dataset:
    """A canary input rich in identifiers: names, IDs, dates, UIDs, private and nested values."""
    return pydicom.dcmread(canary_dir / "P01" / "ST1" / "SE1" / "P01ST1SE1_000001.dcm")


def _private_text(ds: Dataset) -> str:
    for element in ds:
        text = element.VR in ("LO", "SH", "LT", "ST", "UT")
        if element.tag.is_private and text and "CNRY" in str(element.value):
            return str(element.value)
    raise AssertionError("the canary file has a private text value")


def _nested_name(ds: Dataset) -> str:
    for sequence in ds:
        if sequence.VR != "SQ":
            continue
        for item in sequence.value:
            for element in item.iterall():
                if element.VR == "PN" and "CNRY" in str(element.value):
                    return str(element.value)
    raise AssertionError("the canary file has a nested name")


def _deep(value: str) -> Callable[[Dataset], None]:
    """Put ``value`` three sequences deep, in a text attribute the policy keeps."""

    def change(ds: Dataset) -> None:
        inner = Dataset()
        inner.CodeMeaning = f"seen {value} here"
        middle = Dataset()
        middle.ConceptNameCodeSequence = Sequence([inner])
        outer = Dataset()
        outer.ContentSequence = Sequence([middle])
        ds.ContentSequence = Sequence([outer])

    return change


def test_a_correct_output_has_no_leak(canary_file: Dataset, keyring: Keyring) -> None:
    done = pseudonymize(canary_file, keyring)
    assert leaks(done.findings()) == {}


@pytest.mark.parametrize(
    ("kind", "plant", "path"),
    [
        ("name", lambda s: ("Manufacturer", str(s.PatientName).split("^")[0]), "Manufacturer"),
        ("spelled name", lambda s: ("Manufacturer", _spelled(s)), "Manufacturer"),
        ("ID", lambda s: ("ImageComments", f"id {s.PatientID}"), "ImageComments"),
        ("date", lambda s: ("AcquisitionDate", s.StudyDate), "AcquisitionDate"),
        ("UID", lambda s: ("FrameOfReferenceUID", s.StudyInstanceUID), "FrameOfReferenceUID"),
        ("private value", lambda s: ("SeriesDescription", _private_text(s)), "SeriesDescription"),
        ("nested value", lambda s: ("ContentSequence", _nested_name(s)), None),
    ],
)
def test_every_planted_kind_is_found_with_its_path(
    canary_file: Dataset,
    keyring: Keyring,
    kind: str,
    plant: Callable[[Dataset], tuple[str, str]],
    path: str | None,
) -> None:
    done = pseudonymize(canary_file, keyring)
    keyword, value = plant(done.source)
    if keyword == "ContentSequence":
        change = _deep(value)
        path = "ContentSequence[0].ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning"
    else:

        def change(ds: Dataset) -> None:
            setattr(ds, keyword, value)

    found = leaks(done.findings(change))
    assert path in found, (kind, found)


def _spelled(ds: Dataset) -> str:
    family, given = str(ds.PatientName).split("^")[:2]
    return f"Dr {given.title()} {family.title()}"


def test_a_private_binary_value_and_a_file_name_are_found(
    canary_file: Dataset, keyring: Keyring
) -> None:
    done = pseudonymize(canary_file, keyring)
    patient_id = str(done.source.PatientID)

    def plant(ds: Dataset) -> None:
        ds.add_new(0x00330010, "LO", "SOME VENDOR")
        ds.add_new(0x00331001, "OB", b"\x01\x02 " + patient_id.encode() + b" \x00\x07")

    found = done.findings(plant, f"{patient_id}/study/series/file.dcm")
    assert leaks(found).get("(0033,1001)") == "identifier"
    assert leaks(found).get("(file name)") == "identifier"


def test_a_value_changed_in_a_kept_attribute_is_a_leak(
    canary_file: Dataset, keyring: Keyring
) -> None:
    """Kept is the input's value at that place: another attribute's value written into a kept
    attribute is still a leak, even when the kept attribute held a needle of its own."""
    source = copy.deepcopy(canary_file)
    source.ContentCreatorName = "QIICR"
    source.Manufacturer = "https://github.com/QIICR/tools"
    done = pseudonymize(source, keyring)
    assert leaks(done.findings()) == {}, "a kept URL naming the removed creator is its own"
    name = str(source.PatientName).split("^")[0]
    found = done.findings(lambda ds: setattr(ds, "Manufacturer", f"QIICR for {name}"))
    assert leaks(found) == {"Manufacturer": "person name"}


def test_names_match_whole_words_and_not_inside_binary_values(
    canary_file: Dataset, keyring: Keyring
) -> None:
    """An operator TECH is neither the ICC profile's ``tech`` tag nor part of TECHNOLOGY."""
    source = copy.deepcopy(canary_file)
    source.OperatorsName = "TECH"
    profile = b"\x00\x00\x02\x0cADBE\x02\x10\x00\x00mntrRGB XYZ tech\x00\x00\x00\x10desc TECH "
    source.ICCProfile = profile * 4
    done = pseudonymize(source, keyring)
    found = done.findings(lambda ds: setattr(ds, "ImageComments", "BIOTECHNOLOGY phantom"))
    assert leaks(found) == {}
    found = done.findings(lambda ds: setattr(ds, "ImageComments", "done by tech"))
    assert leaks(found) == {"ImageComments": "person name"}


def test_a_name_after_an_iso_2022_escape_is_found(canary_file: Dataset, keyring: Keyring) -> None:
    """In ISO 2022 bytes a name written right after a switch back to ASCII reads ``BNAME``
    (the escape sequence ends with a letter): the attributes are searched as decoded."""
    source = copy.deepcopy(canary_file)
    source.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    name = str(source.PatientName).split("^")[0]
    done = pseudonymize(source, keyring)
    found = done.findings(lambda ds: setattr(ds, "ImageComments", f"\u753b\u50cf\u3000{name}"))
    assert b"\x1b(B" + name.encode() in _written(done.output)
    assert leaks(found) == {"ImageComments": "person name"}


def _written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_value_the_policy_keeps_is_a_warning(canary_file: Dataset, keyring: Keyring) -> None:
    """Under a level that keeps most attributes, a removed name that a kept attribute also
    held is the policy's choice: reported where it is, as a warning."""
    source = copy.deepcopy(canary_file)
    name = str(source.PatientName).split("^")[0]
    source.StudyDescription = f"CT CHEST for {name}"
    done = pseudonymize(source, keyring, "nidb-anonymize")
    found = done.findings()
    assert leaks(found) == {}
    assert any(
        f.path == "StudyDescription" and f.check == "kept-value" and f.severity == "warning"
        for f in found
    )


# -- the corpora: no correct output is quarantined by the verification -------------------------
def _sample(root: Path, target: Path, step: int) -> Path:
    """Links to every ``step``-th DICOM file under ``root``."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() != ".json")
    for index, path in enumerate(files[::step]):
        link = target / f"{index:04d}-{path.name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, link)
    return target


@pytest.fixture()
def operator_env() -> Iterator[None]:
    os.environ["PSEUDO_PASSPHRASE"] = OPERATOR
    yield
    del os.environ["PSEUDO_PASSPHRASE"]


def _verification_quarantines(
    source: Path, output: Path, vault: Path, policy: str, *, pixels: bool = True
) -> list[str]:
    from pseudo.batch.report import load_report

    result = cli(
        *("run", source, output, "--project", "trial", "--vault", vault),
        *("--policy", policy, "--workers", "1", "--json", "--quiet"),
        *(() if pixels else ("--pixels", "off")),
    )
    assert "Traceback" not in result.stderr
    report = load_report(Path(result.json()["report"]))
    return [
        str(f.get("reason"))
        for f in report["files"]
        if f["status"] == "quarantined" and "verification" in str(f.get("reason"))
    ]


def _corpus(name: str) -> Path:
    root = CORPORA[name]
    if not root.exists():
        pytest.skip(f"{name} corpus not found at {root} (the ../shared folder beside the repo)")
    return root


@pytest.mark.parametrize("policy", POLICIES)
def test_no_correct_file_of_the_corpora_is_quarantined_sample(
    policy: str, tmp_path: Path, vault: Path, operator_env: None
) -> None:
    """Every 6th file of each corpus, under every shipped level; the written pixels are read
    back under the default level (the pixel step and its read-back are the same in every
    level: the whole sweep, marked slow, reads them back under each)."""
    for name in CORPORA:
        source = _sample(_corpus(name), tmp_path / "in" / name, 6)
        found = _verification_quarantines(
            source, tmp_path / "out" / name, vault, policy, pixels=policy == "default"
        )
        assert found == [], (policy, name, found[:3])


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", list(CORPORA))
def test_no_correct_file_of_the_corpora_is_quarantined(
    policy: str, name: str, tmp_path: Path, vault: Path, operator_env: None
) -> None:
    """Every file of each corpus, under every shipped level."""
    found = _verification_quarantines(_corpus(name), tmp_path / "out", vault, policy)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    assert found == [], found[:3]


@pytest.mark.parametrize("group", [0x0032, 0x0050, 0x0054, 0x0070])
def test_a_value_that_runs_into_the_next_tag_is_found_in_the_bytes(group: int) -> None:
    """A value of even length has no padding: the next element's first byte (its group's low
    byte, here a letter or a digit) follows its last letter, and the byte after that is 0.
    The raw-byte search, which decides whether the attributes are searched at all, sees it."""
    from pseudo.verify.matching import Matcher
    from pseudo.verify.needles import Needles
    from pseudo.verify.prefilter import output_words

    needles = Needles()
    needles.add("DOEX", "person name")
    needles.add("CNRY4242", "identifier", fold=False)
    for value in (b"DOEX", b"CNRY4242"):
        element = b"\x50\x00\x20\x00LO" + len(value).to_bytes(2, "little") + value
        header = element + group.to_bytes(2, "little") + b"\x01\x10CS\x04\x00BQML"
        split = output_words(header)
        assert value.decode() in split[1]
        hits = Matcher(needles).search_bytes(header, split=split)
        assert [n.text for n, _ in hits] == [value.decode()], (group, value)
    # and a word that merely begins with the value is not it
    other = b"\x50\x00\x20\x00LO\x06\x00DOEXES\x10\x00\x10\x00"
    assert Matcher(needles).search_bytes(other) == []


def test_the_words_stuck_to_a_tag_are_those_of_their_definition() -> None:
    """:func:`tag_stuck_words` finds, without a regular expression, every run of two or more
    letters and digits followed by a zero byte, less its last character (the tag's byte)."""
    import random
    import re

    from pseudo.verify.matching import tag_stuck_words

    definition = re.compile(rb"([A-Za-z0-9]+)[A-Za-z0-9]\x00")
    draw = random.Random(20261203)
    alphabet = b"aZ09\x00 \x01.\xff"
    for _ in range(5000):
        raw = bytes(draw.choice(alphabet) for _ in range(draw.randint(0, 24)))
        expected = {word.upper().decode("ascii") for word in definition.findall(raw)}
        assert tag_stuck_words(raw) == expected, raw
    assert tag_stuck_words(b"\x00DOEX2\x00\x01\x10") == {"DOEX"}


def test_a_needle_before_a_group_whose_first_byte_is_a_latin_1_letter_is_found() -> None:
    """A name at the end of a value of even length, followed by an element of group 00E1."""
    needles = Needles()
    needles.add("SMITHSON", "person name")
    raw = b"\x10\x00\x10\x00PN\x08\x00SMITHSON" + b"\xe1\x00\x10\x10LO\x02\x00AB"
    assert Matcher(needles).search_bytes(raw)
