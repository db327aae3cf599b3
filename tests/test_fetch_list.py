"""``pseudo fetch`` before any network: the accession list, the peers, the help.

A malformed line stops the fetch before the PACS is asked anything, naming the line by its
number and never by its value (an accession number identifies a patient's study).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pseudo.serve.fetch_list import Accession, AccessionListError, read_accession_list
from tests.conftest import cli
from tests.orthanc import free_port


def test_comments_and_blank_lines_are_ignored_and_repeats_kept_once(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# trial 7, batch 2\n\nA100 \n  \n# A999\nB 200\nA100\n")
    assert read_accession_list(listing) == [Accession(3, "A100"), Accession(6, "B 200")]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("SECRET-ACCESSION-17", "more than 16 characters"),
        ("SECRET\\17", "a backslash"),
        ("SECRET*", "a wildcard"),
        ("SECR?T", "a wildcard"),
        ("SECRET\x1b[2J", "a control character"),
    ],
)
def test_a_malformed_line_is_named_by_its_number_not_its_value(
    tmp_path: Path, line: str, problem: str
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"# header\nA100\n{line}\n")
    with pytest.raises(AccessionListError) as raised:
        read_accession_list(listing)
    assert f"line 3: not an accession number ({problem}" in str(raised.value)
    assert "SECR" not in str(raised.value)


def test_the_command_stops_on_a_bad_list_or_peer_before_any_network(
    tmp_path: Path, env: None
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("A100\nSECRET*\n")
    down = f"127.0.0.1:{free_port()}:PACS"
    common = ("fetch", "--project", "trial", "--vault", tmp_path / "vault")
    bad_list = cli(*common, "--from", down, "--accession-list", listing, "--output", tmp_path / "o")
    assert bad_list.code == 2 and bad_list.stderr.count("\n") == 1
    assert "line 2: not an accession number" in bad_list.stderr and "SECRET" not in bad_list.stderr
    listing.write_text("A100\n")
    for option, value, said in [
        ("--from", "pacs:104", "expected HOST:PORT:AET"),
        ("--move-to", "127.0.0.1:70000:ME", "the port must be"),
        ("--ae-title", "A" * 17, "--ae-title"),
    ]:
        extra = [option, value] if option != "--from" else []
        source = value if option == "--from" else down
        result = cli(
            *common,
            "--from",
            source,
            "--accession-list",
            listing,
            "--output",
            tmp_path / "o",
            *extra,
        )
        assert result.code == 2 and result.stderr.count("\n") == 1 and said in result.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    result = cli(*common, "--from", down, "--accession-list", empty, "--output", tmp_path / "o")
    assert result.code == 2 and "holds no accession number" in result.stderr


def test_fetch_has_help_with_an_example() -> None:
    result = cli("fetch", "--help")
    assert result.code == 0 and "Example" in result.stdout and "--accession-list" in result.stdout
