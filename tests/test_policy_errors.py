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
