"""What the command line prints, read as a person reads it (issue 19, and the CLI part of 16).

Help that fits 80 columns whole; the audit view of a data-protection officer; verification
findings grouped; pseudonyms normalized; re-identified values labelled; and text from files
and users (a requester, a patient name, a file name) never taken for markup or escape codes.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import OPERATOR, REID, REPO, cli, make_vault

HOSTILE = "[/]x[red] \x1b[31mred"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# -- helpers ------------------------------------------------------------------------------------
def _env(columns: int) -> dict[str, str]:
    env = dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR, PSEUDO_REID_PASSPHRASE=REID)
    env.update(COLUMNS=str(columns), TERM="xterm")
    env.pop("PSEUDO_VAULT", None)
    return env


def _pseudo(*args: str | Path, columns: int = 80) -> subprocess.CompletedProcess[str]:
    """``pseudo ARGS`` in a subprocess whose stdout is a pipe, at ``columns`` columns."""
    command = [sys.executable, "-m", "pseudo", *map(str, args)]
    return subprocess.run(
        command, env=_env(columns), capture_output=True, text=True, cwd=REPO, timeout=120
    )


def _on_terminal(*args: str | Path, columns: int = 80) -> tuple[int, str]:
    """``pseudo ARGS`` with stdout and stderr on a pseudo-terminal: exit code and screen text
    (escape codes of the terminal's own styling removed)."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pseudo", *map(str, args)],
        env=_env(columns),
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        cwd=REPO,
    )
    os.close(secondary)
    shown = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    code = process.wait(timeout=60)
    os.close(primary)
    return code, shown.decode("utf-8", "replace")


def _cohort(folder: Path, burned: int = 0, name: str | None = None) -> Path:
    """The demo cohort (18 files, 3 patients); ``burned`` files with Burned In Annotation
    neither YES nor NO (a verification warning), every patient named ``name`` if given."""
    from pseudo.demo import build_cohort

    build_cohort(folder)
    for index, path in enumerate(sorted(folder.rglob("*.dcm"))):
        if index >= burned and name is None:
            break
        ds = pydicom.dcmread(path)
        if index < burned:
            ds.BurnedInAnnotation = "MAYBE"
        if name is not None:
            ds.PatientName = name
        ds.save_as(path)
    return folder


def _run(source: Path, target: Path, vault: Path, *extra: str) -> Any:
    result = cli(
        "run", source, target, "--project", "trial", "--vault", vault, "--workers", "1", *extra
    )
    assert result.code in (0, 1), result.stderr
    return result


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """A vault, a run of the cohort with 12 warnings, and one re-identification with a hostile
    requester and reason (for the audit view)."""
    base = tmp_path_factory.mktemp("text")
    vault = make_vault(base / "vault")
    source = _cohort(base / "in", burned=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
        patch.setenv("PSEUDO_REID_PASSPHRASE", REID)
        patch.delenv("PSEUDO_VAULT", raising=False)
        # --pixels off (remembered by the project): with pixel protection the clean images are
        # marked Burned In Annotation NO, and the warnings these tests group are gone.
        _run(source, base / "out", vault, "--quiet", "--pixels", "off")
        pseudonym = sorted(p.name for p in (base / "out").iterdir())[0]
        asked = cli(
            *("reidentify", "--project", "trial", "--pseudonym", pseudonym, "--vault", vault),
            *("--requester", f"Dr. Anna Example-Longname (DPO) {HOSTILE}"),
            *("--reason", "incidental finding on follow-up CT, ticket INC-2026-004711"),
        )
    assert asked.code == 0, asked.stderr
    return {"vault": vault, "source": source, "output": base / "out", "pseudonym": pseudonym}


# -- help ---------------------------------------------------------------------------------------
def _command_paths() -> list[list[str]]:
    import typer.main
    from typer._click import Context

    from pseudo.cli.app import app

    def walk(command: Any, path: list[str]) -> list[list[str]]:
        found = [path]
        if hasattr(command, "list_commands"):
            context = Context(command)
            for name in command.list_commands(context):
                found += walk(command.get_command(context, name), [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


def _options(path: list[str]) -> list[str]:
    import typer.main
    from typer._click import Context

    from pseudo.cli.app import app

    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.get_command(Context(command), name)
    shown = [param for param in command.params if not getattr(param, "hidden", False)]
    return [opt for param in shown for opt in param.opts if opt.startswith("-")]


@pytest.mark.parametrize("columns", [80, 120])
def test_every_help_fits_the_terminal_whole(columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    paths = _command_paths()
    assert len(paths) > 25
    for path in paths:
        result = cli(*path, "--help")
        where = " ".join(["pseudo", *path, "--help"])
        assert result.code == 0, where
        text = result.stdout
        assert "…" not in text, f"{where}: a truncation mark"
        assert "<bool>" not in text, f"{where}: a metavar on a flag"
        cut = re.search(r"^  [a-z-]+\s{2,}.*\w\.\.\.$", text, re.M)  # in a list of commands
        assert not cut, f"{where}: a help cut with ..."
        assert not re.search(r"[a-z]-$", text, re.M), f"{where}: a word split at its hyphen"
        assert max(len(line) for line in text.splitlines()) <= columns, where
        for option in _options(path):
            assert re.search(rf"(^|[\s,]){re.escape(option)}([\s,=]|$)", text, re.M), (
                f"{where}: {option} not shown whole"
            )
        assert "$PSEUDO_REID_PASSPHRA\n" not in text


def test_help_paragraphs_are_reflowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """No line of a paragraph ends early where the docstring had a line break."""
    monkeypatch.setenv("COLUMNS", "80")
    for path in (["run"], ["project", "add-slot"], ["audit", "verify"]):
        text = "\n".join(line.rstrip() for line in cli(*path, "--help").stdout.splitlines())
        description = re.split(r"Arguments:|Options:|╭", text.split("\n\n", 1)[1])[0]
        for paragraph in description.split("\n\n"):
            lines = [line.strip() for line in paragraph.strip("\n").splitlines()]
            for line in lines[:-1]:
                assert len(line) >= 55, f"pseudo {' '.join(path)}: short line {line!r}"


def test_add_slot_help_names_its_passphrase_options_and_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = cli("project", "add-slot", "--help").stdout
    for whole in ("--reid-passphrase-file", "$PSEUDO_REID_PASSPHRASE", "$PSEUDO_NEW_PASSPHRASE"):
        assert whole in text


# -- the audit view -----------------------------------------------------------------------------
REID_FIELDS = (
    "Dr. Anna Example-Longname (DPO)",
    "incidental finding on follow-up CT, ticket INC-2026-004711",
    "reidentifier",  # the key slot
    "success",
)


def _reid_fields(done: dict[str, Any]) -> tuple[str, ...]:
    return (*REID_FIELDS, f"pseudonym:{done['pseudonym']}")


def test_audit_show_on_an_80_column_terminal_shows_every_field_whole(
    done: dict[str, Any],
) -> None:
    code, screen = _on_terminal("audit", "show", "--vault", done["vault"])
    assert code == 0, screen
    text = ANSI.sub("", screen)
    assert "…" not in text
    for value in _reid_fields(done):
        assert value in text, value
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text), "the time, to the second"
    assert "requester:" in text and "key slot:" in text and "reason:" in text


def test_audit_show_in_a_pipe_is_blocks_and_a_wide_terminal_gets_a_table(
    done: dict[str, Any],
) -> None:
    piped = _pseudo("audit", "show", "--vault", done["vault"], "--action", "reidentify")
    assert piped.returncode == 0, piped.stderr
    assert "┃" not in piped.stdout and "│" not in piped.stdout
    assert piped.stdout.startswith("#") and "reidentify  success" in piped.stdout
    for value in _reid_fields(done):
        assert value in piped.stdout
    code, screen = _on_terminal("audit", "show", "--vault", done["vault"], columns=160)
    assert code == 0 and "key slot" in screen and "┃" in screen and "…" not in screen


def test_audit_show_filters(done: dict[str, Any]) -> None:
    vault = done["vault"]

    def records(*args: str) -> list[dict[str, Any]]:
        result = cli("audit", "show", "--vault", vault, "--json", *args)
        assert result.code == 0, result.stderr
        rows: list[dict[str, Any]] = result.json()
        return rows

    everything = records()
    assert {r["action"] for r in records("--action", "reidentify")} == {"reidentify"}
    assert len(records("--action", "reidentify")) == 1
    assert all(r["project"] == "trial" for r in records("--project", "trial"))
    assert records("--project", "other") == []
    assert records("--since", "2000-01-01") == everything
    assert records("--since", "2999-01-01") == []
    assert [r["action"] for r in records("--actor", "anna example")] == ["reidentify"]
    assert records("--actor", "@") == everything  # user@host of each record
    assert records("--last", "1") == everything[-1:]
    assert records("--action", "run", "--last", "1")[0]["outcome"] == "completed"
    table = cli("audit", "show", "--vault", vault, "--csv", "--action", "reidentify")
    assert table.code == 0
    header, row = table.stdout.splitlines()
    assert header.startswith("seq,timestamp,action,outcome,project,actor,os_user,reason")
    assert "reidentifier" in row and f"pseudonym:{done['pseudonym']}" in row
    for wrong in (["--since", "last week"], ["--action", "peek"], ["--csv", "--json"]):
        refused = cli("audit", "show", "--vault", vault, *wrong)
        assert refused.code == 2 and refused.stderr.count("\n") == 1, wrong


def test_csv_cells_are_not_formulas() -> None:
    from pseudo.cli.audit_view import to_csv

    record = {
        "seq": 1,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "actor": "=HYPERLINK(1)",
        "action": "reidentify",
        "project": "p",
        "subject": None,
        "reason": "+1",
        "outcome": "success",
        "details": {},
        "hash": "h",
        "authenticated_by": None,
    }
    row = to_csv([record]).splitlines()[1]
    assert "'=HYPERLINK(1)" in row and "'+1" in row


# -- markup and escape codes ----------------------------------------------------------------------
def test_a_hostile_requester_is_shown_not_obeyed(done: dict[str, Any]) -> None:
    result = cli("audit", "show", "--vault", done["vault"])
    assert result.code == 0, result.stderr
    assert "[/]x[red]" in result.stdout and "\\x1b[31mred" in result.stdout
    assert "\x1b" not in result.stdout
    code, screen = _on_terminal("audit", "show", "--vault", done["vault"])
    assert code == 0 and "[/]x[red]" in screen and "\\x1b[31mred" in screen
    assert "\x1b[31m" not in screen


def test_a_hostile_patient_name_is_shown_by_reidentify(tmp_path: Path, env: None) -> None:
    vault = make_vault(tmp_path / "vault")
    source = _cohort(tmp_path / "in", name=f"DOE^{HOSTILE}")
    _run(source, tmp_path / "out", vault, "--quiet")
    pseudonym = sorted(p.name for p in (tmp_path / "out").iterdir())[0]
    ask = ("--requester", "[bold]Dr A[/]", "--reason", "ticket [/] 1", "--vault", vault)
    result = cli("reidentify", "--project", "trial", "--pseudonym", pseudonym, *ask)
    assert result.code == 0, result.stderr
    assert "DOE^[/]x[red]" in result.stdout and "\x1b" not in result.stdout
    code, screen = _on_terminal("reidentify", "--project", "trial", "--pseudonym", pseudonym, *ask)
    assert code == 0, screen
    assert "[/]x[red]" in screen and "\x1b[31m" not in screen


def test_a_file_name_with_markup_is_listed_by_run_show_inputs(tmp_path: Path, env: None) -> None:
    vault = make_vault(tmp_path / "vault")
    source = _cohort(tmp_path / "in")
    (source / "notes [bold]x[red] \x1b[31m.txt").write_text("not DICOM\n")
    result = cli(
        *("run", source, tmp_path / "out", "--project", "trial", "--vault", vault),
        *("--workers", "1", "--show-inputs"),
    )
    assert result.code == 0, result.stderr
    assert "notes [bold]x[red] \\x1b[31m.txt" in result.stderr
    assert "\x1b" not in result.stderr


def test_a_vault_path_with_brackets_is_shown_whole(tmp_path: Path, env: None) -> None:
    folder = tmp_path / "x[bold]y[/]" / "vault"
    result = cli("vault", "init", "--vault", folder)
    assert result.code == 0, result.stderr
    assert result.stderr.count(str(folder)) == 2  # the vault, and its linkage store


def test_printable_and_safe() -> None:
    from rich.console import Console

    from pseudo.cli.common import printable, safe

    assert printable("a\x1b[31mb\x9bc\x07\td\ne") == "a\\x1b[31mb\\x9bc\\x07\td\ne"
    console = Console(record=True, width=200)
    console.print(safe("[/]x[red]y[bold]"))
    assert console.export_text().strip() == "[/]x[red]y[bold]"


# -- findings, grouped ---------------------------------------------------------------------------
def test_verify_groups_identical_findings(done: dict[str, Any]) -> None:
    result = _pseudo(
        *("verify", done["source"], done["output"], "--project", "trial"),
        *("--vault", done["vault"]),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("12 files: Burned In Annotation is not NO"), result.stdout
    assert "and 9 more" in result.stdout
    assert len(lines) <= 6, result.stdout
    paths = [line for line in lines if line.startswith("    ")]
    assert len(paths) == 4 and max(len(line) for line in paths) <= 80, "a path wrapped"
    assert "0 leaks, 12 warnings" in result.stderr


def test_run_summary_shows_the_warnings_grouped_in_plain_lines(
    done: dict[str, Any], tmp_path: Path
) -> None:
    result = _pseudo(
        *("run", done["source"], tmp_path / "out", "--project", "trial"),
        *("--vault", done["vault"], "--workers", "1"),
    )
    assert result.returncode == 0, result.stderr
    assert "12 files: Burned In Annotation is not NO" in result.stderr
    assert "0 leaks, 12 warnings" in result.stderr
    assert "written:" in result.stderr and "┌" not in result.stderr and "│" not in result.stderr


def test_group_findings_counts_files_and_shortens_paths() -> None:
    from pseudo.cli.findings_view import group_findings, group_lines, short_path
    from pseudo.verify.finding import VerificationFinding

    uid = "2.25.276441165209637360660379735002786796369"
    paths = [f"TRIAL-ABCDEFGHIJKLMNOP/{uid}/{uid}/{uid}{n}.dcm" for n in range(5)]
    findings = [
        VerificationFinding(p, "BurnedInAnnotation", "burned-in", "not NO", "warning")
        for p in paths
    ] + [VerificationFinding(paths[0], "PatientName", "leak", "a name")]
    groups = group_findings(findings)
    assert [(g.severity, g.files) for g in groups] == [("leak", 1), ("warning", 5)]
    lines = [line.plain for line in group_lines(groups)]
    assert lines[2] == "5 files: not NO (BurnedInAnnotation; warning)"
    assert lines[-1] == "    and 2 more"
    assert len(short_path(paths[0])) < 80 and short_path("a/b.dcm") == "a/b.dcm"


# -- re-identification ---------------------------------------------------------------------------
def test_pseudonyms_are_normalized_and_values_labelled(done: dict[str, Any], env: None) -> None:
    pseudonym = done["pseudonym"]
    ask = ("--requester", "Dr A", "--reason", "ticket 1", "--vault", done["vault"])
    for given in (pseudonym.lower(), f"  {pseudonym}  ", f"\t{pseudonym.lower()} "):
        result = cli("reidentify", "--project", "trial", "--pseudonym", given, *ask, "--json")
        assert result.code == 0, (given, result.stderr)
        assert result.json()["pseudonym"] == pseudonym
    last = cli("audit", "show", "--vault", done["vault"], "--json", "--last", "1").json()[0]
    assert last["subject"] == f"pseudonym:{pseudonym}" and last["outcome"] == "success"
    shown = _pseudo("reidentify", "--project", "trial", "--pseudonym", pseudonym, *ask)
    assert shown.returncode == 0, shown.stderr
    assert "<-" not in shown.stdout and "┌" not in shown.stdout
    assert "original patient ID:" in shown.stdout
    assert "study 1: original UID:" in shown.stdout
    assert "study 1: pseudonymous UID:" in shown.stdout


def test_missing_requester_and_reason_message_is_grammatical(
    done: dict[str, Any], env: None
) -> None:
    result = cli("reidentify", "--project", "trial", "--pseudonym", "X", "--vault", done["vault"])
    assert result.code != 0
    assert "--requester and --reason are required" in result.stderr
    one = cli(
        *("reidentify", "--project", "trial", "--pseudonym", "X", "--vault", done["vault"]),
        *("--requester", "Dr A"),
    )
    assert "--reason is required" in one.stderr


def test_audit_json_keeps_its_shape(done: dict[str, Any]) -> None:
    record = cli("audit", "show", "--vault", done["vault"], "--json", "--last", "1").json()[0]
    assert set(record) == {
        *("seq", "timestamp", "actor", "action", "project", "subject", "reason", "outcome"),
        *("details", "hash", "authenticated_by"),
    }
    assert json.dumps(record)
