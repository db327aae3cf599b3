"""A malformed policy fails before any file is read, naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pseudo.policy import PolicyError, load_policy
from tests.conftest import cli


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "name: site\nextends: default\nrules:\n  - select: PatientIDD\n    action: remove\n",
            4,
            "unknown keyword 'PatientIDD' (did you mean PatientID",
        ),
        (
            "name: site\nextends: default\nrules:\n  - select: '(50xx,9999)'\n    action: remove\n",
            4,
            "matches no attribute",
        ),
        (
            "name: site\nextends: default\nrules:\n  - select: PatientID\n    action: obliterate\n",
            5,
            "action",
        ),
        (
            "name: site\nextends: default\nrules:\n  - select: StudyDate\n    action: token\n",
            4,
            "VR DA cannot hold a token",
        ),
        (
            "name: site\nextends: default\nrules:\n  - select: PatientID\n    action: encrypt\n",
            4,
            "set max_input_length to at most 24",
        ),
        (
            "name: site\nextends: default\nrules:\n"
            "  - select: AccessionNumber\n    action: encrypt\n",
            4,
            "use a longer VR",
        ),
        (
            "name: site\nextends: default\nrules:\n  - select: Modality\n    action: keep\n"
            "  - select: Modality\n    action: remove\n",
            6,
            "rules on one attribute conflict",
        ),
        (
            "name: site\nextends: default\noptions: [retain_longitudinal_full_dates]\n",
            3,
            "exclude each other",
        ),
        ("name: site\noptions: [retain_everything]\n", 2, "unknown option"),
        ("name: site\nextends: nothing-like-it\n", 2, "not found"),
        ("name: Site Policy\n", 1, "name"),
        ("name: site\nrules:\n  - select: PatientID\n    action: replace\n", 3, "needs 'value'"),
        ("name: site\nrules: [\n", None, ""),
        # a reversible token is checked for every attribute a pattern or creator can select
        (
            "name: site\nextends: default\nrules:\n"
            "  - select: ['(0008,008x)']\n    action: encrypt\n",
            4,
            "encrypt (0008,008x) (InstitutionName) (LO, at most 64 characters)",
        ),
        (
            "name: site\nextends: default\nrules:\n"
            "  - select: '(0008,008x)'\n    action: encrypt\n    max_input_length: 20\n",
            4,
            "VR SQ cannot hold a token",  # (0008,0082) Institution Code Sequence
        ),
        (
            "name: site\nextends: default\nrules:\n"
            "  - select: {creator: ACME 1.0, tag: '(0029,xx10)'}\n    action: encrypt\n"
            "    max_input_length: 10\n",
            4,
            "select them with their VR",
        ),
        (
            "name: site\nextends: default\nrules:\n  - select: private\n    action: encrypt\n",
            4,
            "the VR of private attributes is only known from a file",
        ),
        (
            "name: site\nextends: default\nrules:\n"
            "  - select: {creator: ACME 1.0, tag: '(0029,xx10)', vr: SH}\n    action: encrypt\n",
            4,
            "encrypt {",  # SH holds 16 characters: no reversible token fits
        ),
        (
            "name: site\nextends: default\nrules:\n  - select: '(0008,00xx)'\n    action: token\n",
            4,
            "(VR DA cannot hold a token)",
        ),
        # duplicate keys
        (
            "name: site\nextends: default\nrules:\n  - select: Modality\n    action: keep\n"
            "    action: remove\n",
            6,
            "duplicate key 'action' (first given on line 5)",
        ),
        (
            "name: site\nextends: default\nrules:\n  - {select: Modality, action: keep}\n"
            "rules:\n  - {select: Modality, action: remove}\n",
            5,
            "duplicate key 'rules' (first given on line 3)",
        ),
        # replacement values must be valid for the VR
        (
            "name: site\nextends: default\nrules:\n"
            "  - {select: StudyDate, action: replace, value: yesterday}\n",
            4,
            "replacement value 'yesterday' is not valid for StudyDate (VR DA)",
        ),
        (
            "name: site\nextends: default\nrules:\n"
            "  - {select: Rows, action: replace, value: abc}\n",
            4,
            "replace cannot apply to Rows (VR US holds binary values, not text)",
        ),
        (
            "name: site\nextends: default\nrules:\n"
            "  - {select: Modality, action: replace, value: mr}\n",
            4,
            "replacement value 'mr' is not valid for Modality (VR CS)",
        ),
        (
            "name: site\nextends: default\nrules:\n"
            "  - {select: PatientAge, action: replace, value: '40 years'}\n",
            4,
            "(VR AS)",
        ),
        # conditional rules with the same condition and different actions
        (
            "name: site\nextends: default\nrules:\n"
            "  - {select: StationName, action: keep, when: {Modality: US}}\n"
            "  - {select: StationName, action: remove, when: {Modality: {equals: US}}}\n",
            5,
            "with another action (remove vs keep) under the same conditions",
        ),
        (
            "name: site\nextends: default\nrules:\n"
            "  - {select: '(0019,xx10)', action: keep, when: {Modality: {in: [MR, CT]}}}\n"
            "  - {select: '(0019,xx10)', action: remove, when: {Modality: {in: [CT, MR]}}}\n",
            5,
            "rules on one attribute conflict",
        ),
        # misspelled keys are named, not reported as a missing key
        (
            "name: site\nextends: default\nrules:\n  - select: PatientID\n    acton: remove\n",
            5,
            "rules[0]: unknown key 'acton' (did you mean 'action'?)",
        ),
        (
            "name: site\nextends: default\nrules:\n"
            "  - select: {creatr: ACME 1.0, tag: '(0029,xx10)'}\n    action: remove\n",
            4,
            "unknown key 'creatr' (did you mean 'creator'?)",
        ),
        (
            "name: site\nextends: default\nrules:\n  - select: StationName\n"
            "    action: remove\n    when: {Modality: {equal: US}}\n",
            6,
            "unknown key 'equal' (did you mean 'equals'?)",
        ),
        ("name: site\nextends: default\nrulez: []\n", 3, "unknown key 'rulez'"),
    ],
)
def test_policy_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as raised:
        load_policy(str(path))
    text_of_error = str(raised.value)
    assert text_of_error.startswith(str(path)), text_of_error
    if line is not None:
        assert text_of_error.startswith(f"{path}:{line}:"), text_of_error
    assert message in text_of_error
    assert "Field required" not in text_of_error and "valid string" not in text_of_error


def test_conditions_that_differ_do_not_conflict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: site\nextends: default\nrules:\n"
        "  - {select: StationName, action: keep, when: {Modality: US}}\n"
        "  - {select: StationName, action: remove, when: {Modality: MR}}\n"
        "  - {select: StationName, action: keep, when: {Modality: MR, Manufacturer: GE}}\n",
    )
    assert len(load_policy(str(path)).rules) >= 3


def test_a_reversible_token_of_a_private_attribute_with_its_vr(tmp_path: Path) -> None:
    """With the VR in the selector, the length is checked before the run, and the run works."""
    import copy

    from pseudo.deid.engine import Pseudonymizer
    from pseudo.deid.tokens import decrypt_token
    from tests.synthetic import dataset, make_keyring

    path = write(
        tmp_path,
        "name: site\nextends: default\nrules:\n"
        "  - select: {creator: ACME 1.0, tag: '(0029,xx10)', vr: LO}\n"
        "    action: encrypt\n    max_input_length: 24\n",
    )
    keyring = make_keyring()
    out = Pseudonymizer(keyring, load_policy(str(path))).pseudonymize(copy.deepcopy(dataset()))
    token = out.dataset[0x00291010].value
    assert len(token) <= 64 and decrypt_token(keyring, "(0029,1010)", token) == "DOE^JOHN"


def test_extends_cycle(tmp_path: Path) -> None:
    write(tmp_path, "name: a\nextends: b\n", "a.yaml")
    write(tmp_path, "name: b\nextends: a\n", "b.yaml")
    with pytest.raises(PolicyError, match="cycle"):
        load_policy(str(tmp_path / "a.yaml"))


def test_run_refuses_a_bad_policy_before_reading_files(
    tmp_path: Path, vault: Path, env: None
) -> None:
    path = write(
        tmp_path, "name: site\nextends: default\nrules:\n  - select: Nope\n    action: remove\n"
    )
    result = cli(
        "run",
        tmp_path / "does-not-matter",
        tmp_path / "out",
        "--project",
        "trial",
        "--vault",
        vault,
        "--policy",
        path,
    )
    assert result.code == 2
    assert result.stderr.strip().count("\n") == 0
    assert f"{path}:4" in result.stderr
    assert not (tmp_path / "out").exists()


def test_child_rules_override_parent_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: site\nextends: default\nrules:\n  - select: PatientName\n    action: empty\n",
    )
    policy = load_policy(str(path))
    assert policy.decide(0x00100010, "PN").action.value == "empty"
    assert policy.decide(0x00100020, "LO").action.value == "pseudonym"
    assert policy.chain == ["basic", "default", "site"]
    assert policy.sha256 != load_policy("default").sha256
