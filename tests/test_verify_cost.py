"""The verifier's shortcuts change nothing it finds: a value skipped by its bytes holds no
needle, the kept values are those of the input where the walk found them, and the
references are the input's."""

from __future__ import annotations

import itertools
import random
from datetime import date

import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from pseudo.io.pydicom_internals import element_map
from pseudo.policy.compiled import Decision
from pseudo.policy.model import Action
from pseudo.verify import recording
from pseudo.verify.elements import PRINTABLE
from pseudo.verify.matching import Matcher
from pseudo.verify.needles import Needles, name_spellings, uid_numbers
from pseudo.verify.prefilter import may_hold_whole
from pseudo.verify.recording import Recorder

_UID = "1.2.826.0.1.3680043.2.1125.42.7"


def _matcher() -> Matcher:
    needles = Needles()
    for spelling in name_spellings("DOE^JOHN"):
        needles.add(spelling, "person name")
    needles.add("MRN123456", "identifier")
    needles.add("12 Rue du Lac", "address")
    needles.add("MÜLLER", "person name")
    needles.add_uid(_UID)
    needles.dates.add(date(2023, 1, 5))
    needles.add_dates(30)
    return Matcher(needles)


def test_a_value_whose_bytes_rule_out_every_needle_holds_none() -> None:
    """``may_be_in`` is False only where ``search_text`` finds nothing, whatever the text:
    names, IDs, UIDs, dates inside longer runs of digits, text after an ISO 2022 escape."""
    ascii_only = Matcher(Needles())
    ascii_only.needles.add("MRN123456", "identifier")
    pieces = [
        "DOE",
        "JOHN",
        "DOE^JOHN",
        "John Doe",
        "MRN123456",
        "MRN1234567",
        "12 rue du lac",
        _UID,
        _UID + ".1",
        "20230105",
        "20230105101600",
        "2023-01-05",
        "\x1b(B",
        "\x1b$B",
        "\x1b(BDOE^JOHN",
        "WHOLE BODY",
        "1",
        "\\",
        " ",
        "",
    ]
    pruned = 0
    for matcher in (_matcher(), Matcher(_ascii_needles())):
        for left, right in itertools.product(pieces, repeat=2):
            text = f"{left} {right}" if left and right else left + right
            raw = text.encode("latin-1")
            if matcher.search_text(text):
                assert matcher.may_be_in(raw), text
            elif not matcher.may_be_in(raw):
                pruned += 1
    assert pruned, "values without a needle's words are ruled out (a needle not ASCII: none)"
    assert ascii_only.may_be_in("MÜLLER".encode("latin-1")), "bytes that are not ASCII are read"
    long_s = Needles()
    long_s.add("STRA\u017fSE", "address")  # a long s: its upper case, STRASSE, is ASCII
    assert Matcher(long_s).search_text("strasse")
    assert Matcher(long_s).may_be_in(b"strasse")


def test_the_runs_of_a_long_binary_value_are_those_of_a_whole_search() -> None:
    """``runs_in`` gives, for a long binary value (looked at only around the needles' words),
    the printable runs a search of every byte gives, those that may hold a needle, in order."""
    rng = random.Random(14)
    pieces = [
        b"doe^john",
        b"MRN123456",
        b"MRN1234567",
        b"20230105",
        b"xx20230105101600",
        b"WHOLE BODY",
        b"JOHNSON",
        b"12 Rue du Lac",
        _UID.encode(),
        b"abc",
        b"\x00" * 9,
    ]
    matchers = [_matcher(), Matcher(_ascii_needles()), Matcher(Needles())]
    for _ in range(40):
        chunks = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))]
        for _ in range(rng.randrange(0, 30)):
            chunks.append(rng.choice(pieces))
            chunks.append(bytes(rng.choice(b" .-_^ab\x01\xff") for _ in range(rng.randrange(4))))
            chunks.append(bytes(rng.randrange(256) for _ in range(rng.randrange(200))))
        value = b"".join(chunks) * (1 + 5000 // len(b"".join(chunks)))
        assert len(value) > 4096
        for matcher in matchers:
            whole = [run.decode("ascii") for run in PRINTABLE.findall(value)]
            expected = [run for run in whole if matcher.may_be_in(run.encode("ascii"))]
            assert matcher.runs_in(value) == expected


def _ascii_needles() -> Needles:
    needles = Needles()
    for spelling in name_spellings("DOE^JOHN"):
        needles.add(spelling, "person name")
    needles.add_uid(_UID)
    needles.dates.add(date(2023, 1, 5))
    needles.add_dates(30)
    return needles


def _keep(action: Action) -> Decision:
    return Decision(action, "test")


def test_kept_values_are_the_inputs_where_the_walk_entered() -> None:
    """A kept attribute's value is the input's, even if an element converted before the walk
    changes later; what the policy changes, private creators and sequences are not kept."""
    ds = Dataset()
    ds.StudyDescription = "CHEST ROUTINE"
    ds.PatientName = "DOE^JOHN"
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "LO", "private value")
    item = Dataset()
    item.ReferencedSOPInstanceUID = _UID
    ds.ReferencedImageSequence = Sequence([item])
    recorder = Recorder()
    recorder.enter(ds)
    recorder(ds, 0x00100010, "PN", _keep(Action.REMOVE))
    ds.StudyDescription = "CHANGED"  # an action after the walk entered
    kept = recorder.kept
    assert kept[((), 0x00081030)] == "CHEST ROUTINE"
    assert ((), 0x00100010) not in kept, "removed by the policy"
    assert ((), 0x00090010) not in kept, "a private creator is not decided by the walk"
    assert ((), 0x00081140) not in kept, "a sequence is not a value"
    assert ((), 0x00091001) in kept
    assert (((0x00081140, 0),), 0x00081155) not in kept, "an item the walk did not enter"


def test_references_are_the_inputs_in_the_items_entered() -> None:
    """The Referenced SOP Instance UIDs of the items the walk entered, by path, as they were
    before the walk changed them."""
    ds = Dataset()
    item = Dataset()
    item.ReferencedSOPInstanceUID = _UID
    ds.ReferencedImageSequence = Sequence([item])
    recorder = Recorder()
    recorder.enter(ds)
    recorder.enter(item, ((0x00081140, 0),))
    recorder(item, 0x00081155, "UI", _keep(Action.REMAP_UID), ((0x00081140, 0),))
    item.ReferencedSOPInstanceUID = "2.25.1"  # remapped
    assert recorder.references() == {"ReferencedImageSequence[0].ReferencedSOPInstanceUID": _UID}
    assert (((0x00081140, 0),), 0x00081155) not in recorder.kept


def test_a_plain_uid_is_added_as_add_uid_adds_it() -> None:
    """Where ``uid_numbers`` gives a UID's numbers, ``add_uid`` adds the UID as it is (not
    skipped) and its words are those numbers; every other UID is left to the general path."""
    words = {"1", "2", "840", "10008", "826", "0", "3680043", "42", "7"}
    uids = [
        _UID,
        _UID + ".99",
        "1.2",
        "1.2.3",
        "1..2.3",
        "1.2.3.",
        ".1.2.3",
        "1.2.840.10008.1.2",
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.3 ",
        "1.2.3\x00",
        "1.2.a3",
        "1.2.\u00b2",
        "12345678",
    ]
    for uid in uids:
        numbers = uid_numbers(uid)
        if numbers is None:
            continue
        needles = Needles()
        needles.add_uid(uid, search=may_hold_whole(uid, words))
        assert needles.uids == {uid} and not needles.skipped, uid
        assert (uid in needles.items) == words.issuperset(numbers), uid
        assert numbers == uid.replace(".", " ").split(), uid
    assert uid_numbers(_UID) and not uid_numbers("1..2.3") and not uid_numbers("1.2.a3")


@pytest.mark.filterwarnings("ignore:Found unknown escape sequence")
def test_the_values_ruled_out_in_bulk_are_those_ruled_out_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Recorder.build`` for an output's words gives the same needles, UIDs, dates and
    skipped counts whether the values the words rule out are found in bulk or one by one."""
    values = [
        (0x00080020, "DA", b"20230105", Action.REMOVE),
        (0x00080080, "LO", "MÜLLER HOSP".encode("latin-1"), Action.REMOVE),
        (0x00081030, "LO", b"CHEST ROUTINE\\HEAD", Action.REMOVE),
        (0x00081040, "LO", b"RADIOLOGY", Action.REMOVE),
        (0x00081048, "PN", b"\x1b$BXY\x1b(B", Action.REMOVE),
        (0x00091001, "UN", b"20220301", Action.SHIFT_DATE),
        (0x00091002, "OB", b"\x00\x01SCANNERX\x00\x00", Action.REMOVE),
        (0x00091003, "LO", b"ACME FOO", Action.REMOVE),
        (0x00100010, "PN", b"DOE^JOHN", Action.REMOVE),
        (0x00100020, "LO", b"MRN123456 ", Action.REMOVE),
        (0x00104000, "LT", b"follow-up for SMITH", Action.REMOVE),
        (0x0020000D, "UI", _UID.encode() + b"\x00", Action.REMAP_UID),
        (0x00321032, "PN", b"AB", Action.REMOVE),
    ]
    # values converted before the walk (the engine reads the patient's name and ID first)
    converted = [
        (0x00100021, "LO", "CNRYKFNQN5", Action.REMOVE),
        (0x00101001, "PN", PersonName("MILLER^KENT"), Action.REMOVE),
        (0x00102160, "SH", "MÜLLER", Action.REMOVE),
        (0x00091010, "LO", "ACME BAR", Action.REMOVE),
        (0x00081050, "PN", PersonName("SMITH^\u00c9VA"), Action.REMOVE),
    ]
    ds = Dataset()
    ds.set_original_encoding(False, True, "iso8859")
    for tag, vr, raw, _ in values:
        element_map(ds)[BaseTag(tag)] = RawDataElement(
            BaseTag(tag), vr, len(raw), raw, 0, False, True
        )
    for tag, vr, value, _ in converted:
        element_map(ds)[BaseTag(tag)] = DataElement(tag, vr, value)
    recorder = Recorder()
    recorder.enter(ds)
    for tag, vr, _, action in sorted([*values, *converted]):
        recorder(ds, tag, vr, _keep(action))
    vocabulary = [
        "DOE",
        "JOHN",
        "CHEST",
        "ROUTINE",
        "HEAD",
        "RADIOLOGY",
        "FOLLOW",
        "UP",
        "FOR",
        "SMITH",
        "ACME",
        "FOO",
        "MRN123456",
        "SCANNERX",
        "20230105",
        "AB",
        "HOSP",
        "XY",
        "CNRYKFNQN5",
        "MILLER",
        "KENT",
        "BAR",
        "EVA",
        *_UID.split("."),
    ]
    rng = random.Random(14)
    one_by_one = lambda values, words: [True] * (len(values) // 6)  # noqa: E731
    for _ in range(200):
        words = set(rng.sample(vocabulary, rng.randrange(len(vocabulary) + 1)))
        bulk = recorder.build(words)
        with monkeypatch.context() as patched:
            patched.setattr(recording, "_not_ruled_out", one_by_one)
            each = recorder.build(words)
        assert bulk.items == each.items and bulk.skipped == each.skipped, words
        assert bulk.uids == each.uids and bulk.dates == each.dates, words
    assert date(2022, 3, 1) in recorder.build(set()).dates, "a private date, whatever the words"


def test_the_words_of_iso_2022_bytes_hold_the_words_of_their_decoded_text() -> None:
    """In ISO 2022 bytes an escape's final letter runs into the next word (``ESC ( B`` then
    ``SMITH``): the words that rule values out hold the word as the decoded text has it, so
    that a value an attribute holds is never ruled out (the attributes of such an output are
    searched as decoded, for the needles of the values left)."""
    from pseudo.verify.prefilter import output_words

    header = (
        b"\x08\x00\x05\x00CS\x10\x00\\ISO 2022 IR 87 "
        b"\x20\x00\x00\x40LT\x16\x00\x1b$B2hA|\x1b(BSMITH\x1b$)C A"
    )
    plain = output_words(header)[1]
    words = output_words(header, iso_2022=True)[1]
    assert "SMITH" not in plain and "BSMITH" in plain
    assert {"SMITH", "BSMITH", "ISO", "2022", "IR", "87"} <= words
    assert plain <= words  # the plain words stay: the raw-byte search works on them


def test_an_output_with_hits_is_searched_for_its_hits_and_the_needles_not_ascii() -> None:
    """The attributes of an output whose bytes hold needles are searched for those (every
    attribute is in the bytes as written), and for every needle that is not ASCII (found in
    text regardless of case, in the bytes only as spelled)."""
    needles = Needles()
    needles.add("DOE^JOHN", "person name")
    needles.add("MRN123456", "identifier", fold=False)
    needles.add("Müller", "person name")
    matcher = Matcher(needles)
    header = b"\x10\x00\x20\x00LO\x0a\x00MRN123456 "
    hits = {needle for needle, _ in matcher.search_bytes(header)}
    assert [n.text for n in hits] == ["MRN123456"]
    located = matcher.of(hits)
    assert {n.text for n in located.needles.items.values()} == {"MRN123456", "Müller"}
    assert [n.text for n in located.search_text("seen MRN123456 and MÜLLER")] == [
        "MRN123456",
        "Müller",
    ]
    assert located.search_text("DOE^JOHN") == []
