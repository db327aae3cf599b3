"""The command line: every command documented, errors as one line, the demo and the README."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli

COMMANDS = [
    ["vault", "init"],
    ["project", "create"],
    ["project", "list"],
    ["run"],
    ["reidentify"],
    ["audit", "verify"],
    ["audit", "show"],
    ["policy", "list"],
    ["policy", "show"],
    ["policy", "validate"],
    ["policy", "explain"],
    ["verify"],
    ["diff"],
    ["inspect"],
    ["dump"],
    ["dicomdir"],
    ["audit", "head"],
    ["vault", "backup"],
    ["vault", "restore"],
    ["project", "close"],
    ["project", "add-slot"],
    ["project", "remove-slot"],
    ["project", "rotate-reid-key"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.code == 0
    assert "Example" in result.stdout


def test_defaults_written_in_help_texts_are_shown() -> None:
    """A help text's ``[default: ...]`` is not taken for Rich markup and dropped."""
    result = cli("run", "--help")
    assert result.code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "Worker processes [default: all cores]." in text
    assert "Vault folder [default: $PSEUDO_VAULT; required]." in text


def test_version() -> None:
    result = cli("--version")
    assert result.code == 0 and result.stdout.startswith("pseudo ")


def test_vault_and_project_commands(tmp_path: Path, env: None) -> None:
    vault = tmp_path / "v"
    assert cli("vault", "init", "--vault", vault).code == 0
    again = cli("vault", "init", "--vault", vault)
    assert again.code == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    created = cli("project", "create", "study-1", "--vault", vault, "--prefix", "S1")
    assert created.code == 0, created.stderr
    record = cli("audit", "show", "--vault", vault, "--json", "--last", "1").json()[0]
    assert record["action"] == "project.create"
    assert "fingerprint (for the data-protection officer" in created.stderr
    assert record["details"]["reid_pin"] in created.stderr, "the DPO is shown the pinned key"
    listed = cli("project", "list", "--vault", vault, "--json").json()
    assert listed[0]["name"] == "study-1" and listed[0]["prefix"] == "S1"
    assert {s["role"] for s in listed[0]["slots"]} == {"operator", "reidentifier"}
    unknown = cli("run", tmp_path, tmp_path.parent / "o", "--project", "nope", "--vault", vault)
    assert unknown.code == 2 and "project 'nope' not found" in unknown.stderr


def test_vault_from_environment(tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSEUDO_VAULT", str(tmp_path / "from-env"))
    assert cli("vault", "init").code == 0
    assert (tmp_path / "from-env" / "vault.json").is_file()


def test_missing_vault_is_one_line(tmp_path: Path, env: None) -> None:
    result = cli("audit", "verify", "--vault", tmp_path / "missing")
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and "no vault here" in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cli("run").code == 2
    assert cli("reidentify", "--pseudonym", "x").code == 2  # --project is required
    assert cli("frobnicate").code == 2


def test_policy_show_and_list() -> None:
    shown = cli("policy", "show", "default", "--json").json()
    assert shown["options"] == ["retain_longitudinal_modified_dates"]
    assert shown["standard_edition"].startswith("2025c")
    by_tag = {d["tag"]: d for d in shown["table"]}
    assert by_tag["(0008,0020)"]["action"] == "clean"
    rules = {tuple(r["select"]): r["action"] for r in shown["rules"]}
    assert rules[("PatientID", "PatientName")] == "pseudonym"
    assert cli("policy", "list").code == 0


def _quick_start() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [
        line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")
    ]


def test_readme_has_exactly_two_quick_start_commands_and_ci_runs_the_second() -> None:
    commands = _quick_start()
    assert len(commands) == 2
    assert commands[0].endswith("pseudo demo")
    assert "pytest" in commands[1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci


def test_the_demo_runs_as_a_user_would(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PSEUDO_")}
    environment["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-m", "pseudo", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Demo complete" in result.stderr
    assert '"patient_name": "DOE^JANE"' in result.stdout
    assert "Audit log intact" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_each_kind_of_error_has_its_documented_exit_status() -> None:
    """The one mapping from an error's kind to the exit status README.md documents; an error
    is classified by its ``kind``, so the command line need not import the class."""
    from keystore.errors import (
        AuthenticationError,
        DatabaseError,
        ErrorKind,
        NotFoundError,
        ProjectNotFoundError,
    )
    from pseudo.batch.errors import OutputError
    from pseudo.cli.common import EXIT_CODES, ExitCode, UserError, exit_code_of
    from pseudo.errors import PseudoError
    from pseudo.review.dicomdir import MediaError

    assert set(EXIT_CODES) == set(ErrorKind)
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 130]

    class Elsewhere(Exception):
        """An error of a module the command line never imported."""

        kind = ErrorKind.UNAVAILABLE

    expected = {
        NotFoundError("x"): 1,
        ProjectNotFoundError("x"): 2,
        PseudoError("x"): 2,
        UserError("x"): 2,
        MediaError("x"): 2,
        AuthenticationError("x"): 3,
        ValueError("x"): 4,  # not an expected error: internal
        DatabaseError("x"): 5,
        OutputError("x"): 5,
        MediaError("x", ErrorKind.UNAVAILABLE): 5,
        Elsewhere("x"): 5,
    }
    assert [exit_code_of(e) for e in expected] == list(expected.values())


def test_ctrl_c_before_a_run_starts_is_said_in_one_line(tmp_path: Path, vault: Path) -> None:
    """Ctrl-C at the passphrase prompt (before the run's own handler): exit 130 and one line
    saying so (typer alone exits 130 silently)."""
    import pty
    import select
    import signal
    import subprocess

    from tests.conftest import run_command

    (tmp_path / "in").mkdir()
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "PSEUDO_PASSPHRASE"}
    process = subprocess.Popen(
        run_command(tmp_path / "in", tmp_path / "out", vault),
        env=env,
        stdin=secondary,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        cwd=REPO,
        start_new_session=True,
    )
    os.close(secondary)
    shown = b""
    try:
        while b"passphrase" not in shown.lower():  # the prompt: the command waits for input
            ready, _, _ = select.select([primary], [], [], 120)
            assert ready, f"no passphrase prompt; the terminal showed {shown!r}"
            shown += os.read(primary, 4096)
        os.kill(process.pid, signal.SIGINT)
        while process.poll() is None or select.select([primary], [], [], 0.1)[0]:
            ready, _, _ = select.select([primary], [], [], 60)
            if not ready:
                break
            try:
                shown += os.read(primary, 4096)
            except OSError:  # the other end closed
                break
    finally:
        os.close(primary)
    assert process.wait(timeout=60) == 130
    assert b"pseudo: interrupted" in shown
    assert b"Traceback" not in shown
