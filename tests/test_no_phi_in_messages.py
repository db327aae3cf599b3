"""Nothing identifying is printed or logged by default: not on stdout or stderr of any command
(progress, summaries, warnings, errors), not in run reports, not in the audit log.

Commands that exist to show values are left out, as documented: ``reidentify`` (its answer),
``inspect`` and ``dump`` (for data one may look at), and anything given ``--show-values``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pseudo.batch.report import run_reports
from tests.conftest import CANARY_SECRET, OPERATOR, REID, REPO, make_vault

TOKEN = re.compile(r"CNRY[A-Z0-9]{6}", re.IGNORECASE)
IMAGE_DATA = re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+")


def _pseudo(*args: str | Path, env: dict[str, str]) -> str:
    """Run a command as a user would (a pipe, not a terminal); return stdout and stderr."""
    process = subprocess.run(
        [sys.executable, "-m", "pseudo", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    return process.stdout + process.stderr


def test_no_canary_in_any_message_report_or_log(
    canary_dir: Path, answer_key: dict[str, Any], tmp_path: Path
) -> None:
    # Archives often name folders after patients: so does this copy of the corpus.
    corpus, canary_dir = canary_dir, tmp_path / "DOE_CNRYF0LDER" / "dicom"
    shutil.copytree(corpus, canary_dir)
    vault = make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)
    env = dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR, PSEUDO_REID_PASSPHRASE=REID)
    out = tmp_path / "out"
    texts: list[str] = []
    texts.append(_pseudo("run", canary_dir, out, "--project", "canary", "--vault", vault, env=env))
    texts.append(
        _pseudo("run", canary_dir, out, "--project", "canary", "--vault", vault, "--json", env=env)
    )
    # A broken copy of a canary file, quarantined: its reason must not quote its values.
    broken = tmp_path / "broken"
    broken.mkdir()
    first = next(iter(sorted(answer_key["files"])))
    data = (canary_dir / first).read_bytes()
    (broken / "cut.dcm").write_bytes(data[: len(data) * 2 // 3])
    (broken / "whole.dcm").write_bytes(data)
    texts.append(
        _pseudo("run", broken, tmp_path / "out2", "--project", "canary", "--vault", vault, env=env)
    )
    texts.append(
        _pseudo("verify", canary_dir, out, "--project", "canary", "--vault", vault, env=env)
    )
    texts.append(_pseudo("verify", canary_dir, out, env=env))
    texts.append(_pseudo("diff", canary_dir, out, env=env))
    texts.append(_pseudo("diff", canary_dir, out, "--html", tmp_path / "review.html", env=env))
    # The thumbnails are base64 pixels: random letters, which can spell a token by chance.
    texts.append(IMAGE_DATA.sub("data:image", (tmp_path / "review.html").read_text()))
    texts.append(_pseudo("audit", "show", "--vault", vault, env=env))
    texts.append(_pseudo("audit", "show", "--json", "--vault", vault, env=env))
    texts.append(_pseudo("audit", "verify", "--vault", vault, env=env))
    pseudonym = sorted(p.name for p in out.iterdir())[0]
    wrong = dict(env, PSEUDO_REID_PASSPHRASE="not the passphrase at all")
    for args, environment in (
        (("--requester", "DPO"), env),  # no reason: refused
        (("--requester", "DPO", "--reason", "wrong passphrase"), wrong),
    ):
        texts.append(
            _pseudo(
                "reidentify",
                "--project",
                "canary",
                "--pseudonym",
                pseudonym,
                *args,
                "--vault",
                vault,
                env=environment,
            )
        )
    reports = [r for f in tmp_path.glob("*.pseudo-run") for r in run_reports(f)]
    assert len(reports) == 3
    for report in reports:
        texts.append(report.read_text())
        inputs = Path(json.loads(report.read_text())["inputs"])
        if report.parent.name == "out.pseudo-run":
            assert "CNRYF0LDER" in inputs.read_text(), "the operator's listing names the inputs"
        assert inputs.stat().st_mode & 0o777 == 0o600
    texts.append(_pseudo("audit", "show", "--json", "--vault", vault, env=env))

    everything = "\n".join(texts)
    assert "Traceback" not in everything
    found = set(TOKEN.findall(everything))
    assert not found, f"canary tokens printed or logged: {sorted(found)[:5]}"
    for patient in answer_key["patients"].values():
        assert patient["birth_date"] not in everything
    # The checks above would see a leak: the documented exception prints identities.
    shown = _pseudo(
        "reidentify",
        "--project",
        "canary",
        "--pseudonym",
        pseudonym,
        "--requester",
        "DPO",
        "--reason",
        "the one command meant to show them",
        "--json",
        "--vault",
        vault,
        env=env,
    )
    assert TOKEN.search(shown), "the answer of a re-identification does hold identities"
