"""Key slots from the command line: add and remove people, raise the scrypt cost.

Nothing here reprocesses an image: the pseudonymized output stays byte for byte the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pseudo.demo import build_cohort
from tests.conftest import OPERATOR, REID, cli, tree_digest

FAST = ("--scrypt-n", "16384")
REQUEST = ("--requester", "Dr. Test (DPO)", "--reason", "incidental finding, ticket T-2")

NEW_COMMANDS = [
    ["project", "add-slot"],
    ["project", "remove-slot"],
    ["project", "rotate-reid-key"],
    ["project", "close"],
    ["vault", "rewrap-slot"],
    ["vault", "kdf-time"],
    ["vault", "backup"],
    ["vault", "restore"],
    ["audit", "head"],
    ["audit", "checkpoint"],
]


def run_cohort(tmp_path: Path, vault: Path) -> Path:
    """Pseudonymize the demo cohort into ``tmp_path/out`` (needs $PSEUDO_PASSPHRASE)."""
    if not (tmp_path / "in").exists():
        build_cohort(tmp_path / "in")
    result = cli(
        "run", tmp_path / "in", tmp_path / "out", "--project", "trial", "--vault", vault, "--json"
    )
    assert result.code == 0, result.stderr
    return tmp_path / "out"


def reidentify(vault: Path, pseudonym: str, *extra: str) -> tuple[int, dict[str, object], str]:
    """``pseudo reidentify`` with the standard request; returns code, JSON (or {}), stderr."""
    result = cli(
        "reidentify",
        "--project",
        "trial",
        "--pseudonym",
        pseudonym,
        *REQUEST,
        "--json",
        "--vault",
        vault,
        *extra,
    )
    return result.code, (result.json() if result.code == 0 else {}), result.stderr


def last_audit(vault: Path) -> dict[str, object]:
    """The last audit record, as ``audit show --json`` prints it."""
    record: dict[str, object] = cli(
        "audit", "show", "--vault", vault, "--json", "--last", "1"
    ).json()[0]
    return record


@pytest.mark.parametrize("command", NEW_COMMANDS, ids=" ".join)
def test_every_new_command_has_help_with_an_example(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.code == 0
    assert "Example" in result.stdout


def test_people_are_added_and_removed_without_reprocessing_any_image(
    tmp_path: Path, vault: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_cohort(tmp_path, vault)
    before = tree_digest(out)
    pseudonym = sorted(p.name for p in out.iterdir())[0]

    monkeypatch.setenv("PSEUDO_NEW_PASSPHRASE", "bob's operator passphrase")
    added = cli(
        "project", "add-slot", "trial", "op-bob", "--role", "operator", *FAST, "--vault", vault
    )
    assert added.code == 0, added.stderr
    monkeypatch.setenv("PSEUDO_NEW_PASSPHRASE", "carol's re-identification passphrase")
    added = cli(
        "project",
        "add-slot",
        "trial",
        "dpo-carol",
        "--role",
        "reidentifier",
        *FAST,
        "--vault",
        vault,
    )
    assert added.code == 0, added.stderr
    assert last_audit(vault)["action"] == "slot.add"

    # Bob runs the same input again: nothing is reprocessed, the output is unchanged.
    monkeypatch.setenv("PSEUDO_PASSPHRASE", "bob's operator passphrase")
    again = cli(
        "run", tmp_path / "in", out, "--project", "trial", "--vault", vault, "--json", "--quiet"
    )
    assert again.code == 0, again.stderr
    assert again.json()["written"] == 0 and again.json()["unchanged"] == 18
    assert tree_digest(out) == before

    # Carol re-identifies with her own passphrase, and the audit log names her slot.
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", "carol's re-identification passphrase")
    code, identity, stderr = reidentify(vault, pseudonym)
    assert code == 0, stderr
    assert str(identity["patient_id"]).startswith("MRN")
    record = last_audit(vault)
    assert isinstance(record["details"], dict) and record["details"]["slot"] == "dpo-carol"

    # Carol removes the first re-identifier; that passphrase no longer opens anything.
    removed = cli("project", "remove-slot", "trial", "reidentifier", "--vault", vault)
    assert removed.code == 0, removed.stderr
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", REID)
    assert reidentify(vault, pseudonym)[0] == 3
    # ... and the last slot of a kind is never removed.
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", "carol's re-identification passphrase")
    last = cli("project", "remove-slot", "trial", "dpo-carol", "--vault", vault)
    assert last.code == 2 and last.stderr.count("\n") == 1
    assert "last re-identification slot" in last.stderr
    listed = cli("project", "list", "--vault", vault, "--json").json()[0]
    assert {(s["name"], s["role"]) for s in listed["slots"]} == {
        ("operator", "operator"),
        ("op-bob", "operator"),
        ("dpo-carol", "reidentifier"),
    }
    assert tree_digest(out) == before


def test_adding_a_slot_needs_a_passphrase_of_that_role(
    vault: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSEUDO_NEW_PASSPHRASE", "mallory's passphrase")
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", OPERATOR)  # an operator tries to add a DPO
    result = cli(
        "project", "add-slot", "trial", "mallory", "--role", "reidentifier", *FAST, "--vault", vault
    )
    assert result.code == 3 and result.stderr.count("\n") == 1
    assert "wrong re-identification passphrase" in result.stderr
    assert last_audit(vault)["outcome"] == "denied: wrong passphrase"
    data = json.loads((vault / "projects" / "trial.json").read_text())
    assert "mallory" not in {s["name"] for s in data["slots"]}
    unknown = cli("project", "remove-slot", "trial", "nobody", "--vault", vault)
    assert unknown.code == 2 and "has no key slot 'nobody'" in unknown.stderr


def test_raising_the_scrypt_cost_of_a_slot(
    tmp_path: Path, vault: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_cohort(tmp_path, vault)
    result = cli(
        "vault", "rewrap-slot", "trial", "operator", "--scrypt-n", "32768", "--vault", vault
    )
    assert result.code == 0, result.stderr
    slots = {
        s["name"]: s for s in cli("project", "list", "--vault", vault, "--json").json()[0]["slots"]
    }
    assert slots["operator"]["kdf"] == {"n": 32768, "r": 8, "p": 1}
    assert slots["reidentifier"]["kdf"]["n"] == 16384
    record = last_audit(vault)
    assert record["action"] == "slot.rewrap"
    assert isinstance(record["details"], dict) and record["details"]["to"]["n"] == 32768
    # same keys: the re-run changes nothing
    again = cli("run", tmp_path / "in", out, "--project", "trial", "--vault", vault, "--json")
    assert again.code == 0 and again.json()["unchanged"] == 18
    # the re-identifier changes their passphrase at the same time
    monkeypatch.setenv("PSEUDO_NEW_PASSPHRASE", "a new re-identification passphrase")
    changed = cli(
        "vault", "rewrap-slot", "trial", "reidentifier", "--change-passphrase", "--vault", vault
    )
    assert changed.code == 0, changed.stderr
    pseudonym = next(out.iterdir()).name
    assert reidentify(vault, pseudonym)[0] == 3
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", "a new re-identification passphrase")
    assert reidentify(vault, pseudonym)[0] == 0
    too_cheap = cli(
        "vault", "rewrap-slot", "trial", "operator", "--scrypt-n", "1024", "--vault", vault
    )
    assert too_cheap.code == 2 and "--scrypt-n 1024" in too_cheap.stderr


def test_kdf_time_reports_the_default_cost() -> None:
    result = cli("vault", "kdf-time", "--json")
    assert result.code == 0
    data = result.json()
    assert data["n"] == 65536 and data["seconds"] >= 0.1
