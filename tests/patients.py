"""Small synthetic DICOM files of named patients, and the CLI calls the identity tests share."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from keystore.session import VaultSession
from pseudo.batch.report import load_report
from tests.conftest import CliResult, cli
from tests.synthetic import dataset


def _uid(*parts: str) -> str:
    return "2.25." + str(int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:30], 16))


def write_patient(
    folder: Path,
    patient_id: str,
    *,
    name: str = "DOE^JANE",
    birth_date: str = "19700101",
    sex: str = "F",
    study: str = "s1",
    issuer: str | None = None,
    tag: str = "",
) -> Path:
    """A small CT file of one patient, one study and one instance, at ``folder/<file>.dcm``
    (its UIDs depend on every argument, so two calls never share an instance)."""
    ds: Dataset = dataset()
    seed = (str(folder), patient_id, name, birth_date, sex, study, issuer or "", tag)
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyDescription = "CT CHEST"
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    ds.StudyInstanceUID = _uid(patient_id, study, issuer or "")
    ds.SeriesInstanceUID = _uid(patient_id, study, issuer or "", "series")
    ds.SOPInstanceUID = _uid(*seed, "instance")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256('/'.join(seed).encode()).hexdigest()[:12]}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def run(vault: Path, source: Path, target: Path, *extra: str | Path) -> CliResult:
    """``pseudo run`` of project ``trial`` with one worker, JSON counts."""
    return cli(
        *("run", source, target, "--project", "trial", "--vault", vault),
        *("--workers", "1", "--quiet", "--json", *extra),
    )


def report_of(result: CliResult) -> dict[str, Any]:
    """The run report of a ``--json`` run."""
    report: dict[str, Any] = load_report(Path(result.json()["report"]))
    return report


def patients_in(output: Path) -> set[str]:
    """The patient folders of an output tree."""
    return {p.name for p in output.iterdir() if p.is_dir() and not p.name.startswith(".")}


def reidentify(vault: Path, pseudonym: str) -> CliResult:
    """``pseudo reidentify --json`` of one pseudonym of project ``trial``."""
    return cli(
        *("reidentify", "--project", "trial", "--pseudonym", pseudonym, "--json"),
        *("--requester", "DPO (test)", "--reason", "identity test", "--vault", vault),
    )


def audit_actions(vault: Path, prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, outcome, details) of the audit records whose action starts with ``prefix``."""
    with VaultSession(vault) as session:
        return [
            (r.action, r.outcome, json.loads(r.details))
            for r in session.audit.records()
            if r.action.startswith(prefix)
        ]


def linkage_count(vault: Path) -> int:
    """The number of sealed linkage records of project ``trial``."""
    with VaultSession(vault) as session:
        return session.linkage.count("trial")
