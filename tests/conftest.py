"""Shared fixtures: the ../shared corpora, fast vaults, and the CLI run in-process."""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Collection, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keystore.crypto import ScryptParams
from keystore.session import VaultSession
from keystore.vault import Vault
from pseudo.batch.report import inputs_folder, load_report, run_reports

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PSEUDO_SHARED", REPO.parent / "shared"))
CANARY = SHARED / "corpus" / "phi-canary"
PUBLIC = SHARED / "corpus" / "public"
REFERENCE = SHARED / "reference" / "ps3.15"

OPERATOR = "operator passphrase for tests"
REID = "re-identification passphrase for tests"
#: The cheapest scrypt cost a slot accepts, to keep the suite fast.
FAST_KDF = ScryptParams(n=2**14)


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile pseudo and keystore once, before the first test (in the main process, not
    in each xdist worker): the suite starts hundreds of ``python -m pseudo`` processes, and
    where ``PYTHONDONTWRITEBYTECODE`` is set (as on this project's machines) each of them
    compiled every module it imports again, which an installed copy never does."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        for package in ("pseudo", "keystore"):
            compileall.compile_dir(REPO / package, quiet=2)


def need(path: Path, what: str) -> Path:
    """Skip the test, saying why, when part of ../shared is missing."""
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (the ../shared folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def canary_dir() -> Path:
    """The PHI canary corpus."""
    return need(CANARY / "dicom", "PHI canary corpus")


@pytest.fixture(scope="session")
def answer_key() -> dict[str, Any]:
    """The canary corpus's answer key."""
    key: dict[str, Any] = json.loads(
        need(CANARY / "answer_key.json", "PHI canary answer key").read_text()
    )
    return key


@pytest.fixture(scope="session")
def public_dir() -> Path:
    """The public DICOM corpus."""
    return need(PUBLIC, "public DICOM corpus")


def make_vault(
    path: Path, project: str = "trial", secret: bytes | None = None, prefix: str | None = None
) -> Path:
    """A vault with one project whose slots open with OPERATOR and REID."""
    Vault.init(path)
    with VaultSession(path) as session:
        session.vault.create_project(
            project, OPERATOR, REID, secret=secret, kdf=FAST_KDF, prefix=prefix
        )
    return path


@pytest.fixture()
def vault(tmp_path: Path) -> Path:
    """A fresh vault with project ``trial``."""
    return make_vault(tmp_path / "vault")


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passphrases in the environment, as scripts and CI give them."""
    monkeypatch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", REID)
    monkeypatch.delenv("PSEUDO_VAULT", raising=False)


@dataclass
class CliResult:
    """Exit code and captured output of one in-process ``pseudo`` invocation."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)


def cli(*args: str | Path) -> CliResult:
    """Run ``pseudo`` in this process (faster than a subprocess) and capture everything."""
    from pseudo.cli.app import main

    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def cli_as_operator(*args: str | Path) -> CliResult:
    """:func:`cli` with the operator's passphrase in ``PSEUDO_PASSPHRASE`` (removed after)."""
    os.environ["PSEUDO_PASSPHRASE"] = OPERATOR
    try:
        return cli(*args)
    finally:
        del os.environ["PSEUDO_PASSPHRASE"]


def run_command(
    source: Path, target: Path, vault: Path, *extra: str, project: str = "trial"
) -> list[str]:
    """``pseudo run SOURCE TARGET --project P --vault V ...`` as a subprocess's argument list
    (for the tests that need a real process: signals, memory, terminals, locks)."""
    return [
        *(sys.executable, "-m", "pseudo", "run", str(source), str(target)),
        *("--project", project, "--vault", str(vault), *extra),
    ]


def wait_until_writing(target: Path, timeout: float = 60) -> None:
    """Wait until a run has begun writing files under ``target`` (its temporary ``.part``
    files, or files already in place): the moment to interrupt it mid-way."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if next(target.rglob("*.part"), None) or next(target.glob("*/*/*/*.dcm"), None):
            return
        time.sleep(0.02)


#: The form of the canary corpus's tokens; a lookahead, so that overlapping ones are found.
_CANARY_BYTES = re.compile(rb"(?=(CNRY[A-Z0-9]{6}))")
_CANARY_TEXT = re.compile(r"(?=(CNRY[A-Z0-9]{6}))")
_CANARY_FORM = re.compile(r"CNRY[A-Z0-9]{6}")


def canary_tokens_in(data: bytes | str, tokens: Collection[str]) -> set[str]:
    """The ``tokens`` that ``data`` holds: what ``token in data`` finds for each of them, in
    one pass over ``data`` for those of the corpus's form (13,125 searches of every output
    byte took half a minute for the corpus)."""
    if isinstance(data, bytes):
        found = {m.decode() for m in _CANARY_BYTES.findall(data)}
        other = {t for t in tokens if not _CANARY_FORM.fullmatch(t) and t.encode() in data}
    else:
        found = set(_CANARY_TEXT.findall(data))
        other = {t for t in tokens if not _CANARY_FORM.fullmatch(t) and t in data}
    return (found & set(tokens)) | other


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@dataclass
class CanaryRun:
    """The default policy run once over the canary corpus (shared by many tests)."""

    vault: Path
    output: Path
    report: dict[str, Any]
    pairs: dict[str, Path]  # answer-key path -> output file


#: A fixed project secret, so that offsets and pseudonyms are the same on every test run.
CANARY_SECRET = hashlib.sha256(b"pseudo test suite: canary project").digest()


def _run_canary(base: Path, canary_dir: Path, *extra: str) -> CanaryRun:
    """Pseudonymize the canary corpus with the CLI and the default policy into ``base``."""
    vault_path = make_vault(base / "vault", "canary", secret=CANARY_SECRET)
    output = base / "out"
    os.environ["PSEUDO_PASSPHRASE"] = OPERATOR
    try:
        result = cli(
            "run",
            canary_dir,
            output,
            "--project",
            "canary",
            "--vault",
            vault_path,
            "--workers",
            "2",
            "--json",
            "--quiet",
            *extra,
        )
    finally:
        del os.environ["PSEUDO_PASSPHRASE"]
    assert result.code == 0, result.stderr
    report = load_report(Path(result.json()["report"]))
    return CanaryRun(vault_path, output, report, _pairs(report, canary_dir, output))


def _pairs(report: dict[str, Any], canary_dir: Path, output: Path) -> dict[str, Path]:
    """Answer-key path -> output file, from a run's report."""
    return {
        str(Path(f["input"]).relative_to(canary_dir.resolve())): output / f["output"]
        for f in report["files"]
        if f["output"]
    }


@pytest.fixture(scope="session")
def canary_run(tmp_path_factory: pytest.TempPathFactory, canary_dir: Path) -> CanaryRun:
    """Pseudonymize the canary corpus with the CLI and the default policy (pixels on: its
    ultrasound images carry real text, which is blanked)."""
    return _shared_canary(tmp_path_factory, canary_dir, "canary")


@pytest.fixture(scope="session")
def canary_run_without_pixels(
    tmp_path_factory: pytest.TempPathFactory, canary_dir: Path
) -> CanaryRun:
    """:func:`canary_run` with ``--pixels off``: the reference of the tests of how a run is
    made (interrupted, resumed, concurrent, distributed), where the pixel step, file by file,
    changes nothing and its OCR would be most of each run's time."""
    return _shared_canary(tmp_path_factory, canary_dir, "canary-no-pixels", "--pixels", "off")


def _shared_canary(
    factory: pytest.TempPathFactory, canary_dir: Path, name: str, *extra: str
) -> CanaryRun:
    """:func:`_run_canary`, made once per test session. Under pytest-xdist the first worker
    to ask makes it, under a lock, in a folder the workers share (beside their own temporary
    folders, so new each session); each worker then works on its own copy of the vault, the
    output and the report folder, since tests write to them (re-identification appends to
    the vault's audit log). Without this, each worker made the run itself, at the same time
    as the other, both competing for the same cores."""
    own = factory.mktemp(name)
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return _run_canary(own, canary_dir, *extra)
    shared = factory.getbasetemp().parent / f"shared-{name}"
    shared.mkdir(exist_ok=True)
    made, done = shared / "made", shared / "done"
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not done.exists():  # first here, or the worker before failed: start afresh
            shutil.rmtree(made, ignore_errors=True)
            made.mkdir()
            _run_canary(made, canary_dir, *extra)
            done.touch()  # last: the run, its vault and its report are complete
    return _copy_canary(made, own, canary_dir)


def _copy_canary(made: Path, own: Path, canary_dir: Path) -> CanaryRun:
    """A copy in ``own`` of the canary run made in ``made`` (by :func:`_run_canary`), as if
    made there: file modes and times kept (the vault's database is closed: its file alone is
    consistent), and the report's output and inputs file now the copy's."""
    for part in ("vault", "out", "out.pseudo-run"):
        shutil.copytree(made / part, own / part, symlinks=True)
    vault_path, output = own / "vault", own / "out"
    (report_path,) = run_reports(own / "out.pseudo-run")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["output"] = str(output)
    report["inputs"] = str(inputs_folder(vault_path, "canary") / Path(report["inputs"]).name)
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report = load_report(report_path)
    return CanaryRun(vault_path, output, report, _pairs(report, canary_dir, output))


@pytest.fixture(scope="session")
def canary_diff(canary_run: CanaryRun, canary_dir: Path) -> dict[str, Any]:
    """``pseudo diff --json`` of the canary corpus and :func:`canary_run`'s output (the
    change rows are read by several tests; the diff of 95 files takes seconds)."""
    result = cli("diff", canary_dir, canary_run.output, "--json")
    assert result.code == 0, result.stderr
    data: dict[str, Any] = result.json()
    return data


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """The URL of a throwaway PostgreSQL server, one per test module (see tests/postgres.py)."""
    from tests import postgres

    with postgres.server() as url:
        yield url
