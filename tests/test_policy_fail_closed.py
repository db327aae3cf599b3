"""Fail closed on attributes Table E.1-1 does not list: under the default policy, no standard
attribute that can hold a person's name, a date or free text is kept unless a table row or a
rule decides so (issue 16, docs/policies.md)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, keyword_for_tag

from pseudo.io.pydicom_internals import dictionary_entries
from pseudo.policy.identifying import is_identifying
from pseudo.policy.loader import load_policy
from pseudo.policy.model import Action
from tests.conftest import OPERATOR, make_vault, run_command

#: VRs that always need a decision: names, dates, times, free text.
NEEDS_DECISION = {"PN", "DA", "DT", "TM", "LT", "ST", "UT", "UC"}


def _vr(tag: int) -> str:
    return dictionary_VR(tag).split(" or ")[0]


def test_no_unlisted_name_date_or_free_text_is_kept_by_the_default_policy() -> None:
    policy = load_policy("default")
    kept = []
    for tag in dictionary_entries():
        vr = _vr(tag)
        if tag & 0xFFFF == 0 or tag >> 16 in (0x0002, 0xFFFE) or vr == "SQ":
            continue
        decision = policy.fallback(tag, vr)
        if decision.source.startswith("PS3.15"):
            continue  # a table row decides
        if (vr in NEEDS_DECISION or is_identifying(tag)) and decision.action is Action.KEEP:
            kept.append(keyword_for_tag(tag) or hex(tag))
    assert kept == []


@pytest.mark.parametrize(
    "keyword", ["PatientBirthDateInAlternativeCalendar", "ContactDisplayName", "TextValue"]
)
def test_the_issues_examples_are_decided_by_a_safety_net(keyword: str) -> None:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None
    decision = load_policy("default").decide(tag, _vr(tag))
    assert decision.action in (Action.REMOVE, Action.EMPTY, Action.CLEAN), decision
    assert "defaults" in decision.source


def test_a_value_planted_in_every_attribute_of_the_dictionary(tmp_path: Path) -> None:
    """Plant a token in every top-level text attribute of the dictionary that the default
    policy does not decide by a table row or a rule; none of them survives in the output."""
    import json
    import os
    import subprocess

    from pseudo.batch.report import load_report
    from tests.conftest import REPO

    policy = load_policy("default")
    source = get_testdata_file("CT_small.dcm")
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    planted: dict[str, str] = {}
    for number, tag in enumerate(sorted(dictionary_entries())):
        vr = _vr(tag)
        if tag >> 16 in (0x0002, 0x0008, 0x0020, 0x0028) and tag in ds:
            continue  # the file's own identity and geometry
        if tag >> 16 < 0x0008 or tag >> 16 >= 0x7FE0 or vr not in NEEDS_DECISION | {"LO", "SH"}:
            continue
        if vr in ("LO", "SH") and not is_identifying(tag):
            continue  # coded or descriptive strings the profile keeps
        if policy.fallback(tag, vr).source.startswith("PS3.15"):
            continue
        token = {"DA": "19710203", "DT": "19710203040506", "TM": "040506"}.get(
            vr, f"PLNT{number:05d}"
        )
        ds.add_new(tag, vr, token)
        planted[keyword_for_tag(tag) or hex(tag)] = token
    folder = tmp_path / "in"
    folder.mkdir()
    ds.save_as(folder / "planted.dcm")
    process = subprocess.run(
        run_command(folder, tmp_path / "out", make_vault(tmp_path / "vault"), "--json"),
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    report = load_report(Path(json.loads(process.stdout)["report"]))
    assert report["files"][0]["status"] == "written", report["files"][0]
    (written,) = (tmp_path / "out").glob("*/*/*/*.dcm")
    data = written.read_bytes()
    out = pydicom.dcmread(written)
    survived = [
        keyword
        for keyword, token in planted.items()
        if token.startswith("PLNT") and token.encode() in data
    ]
    # dates are shifted; times are kept with the dates under Modified Dates (the default)
    dates = [k for k, t in planted.items() if len(t) > 6 and not t.startswith("PLNT")]
    dates = [k for k in dates if str(out.get(k, "")) == planted[k]]
    assert len(planted) > 100
    assert survived == [] and dates == []
