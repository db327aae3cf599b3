"""``pseudo fetch`` against a real PACS: Debian's Orthanc on loopback, holding the canary corpus.

The studies of two patients are fetched by accession number (with an unknown one in the list):
every instance arrives, no canary token is in any output byte, and the outputs are those of
``pseudo run``: the same paths (pseudonyms, UIDs) and the same data sets as a run of the
corpus files, byte for byte the files of a run of what the PACS sends (Orthanc re-encodes on
the network: sequences with explicit lengths, some Pixel Data as OB rather than OW; the values
are the same, their layout is not).
A second fetch fetches and writes nothing; C-MOVE gives the same files as C-GET; a PACS that
is down, or that rejects our AE title, is one clear line.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from keystore.actions import AuditAction
from keystore.session import VaultSession
from pseudo.io.layout import is_output_file
from pseudo.serve.fetch_scu import Finder, get_instances
from pseudo.serve.peer import parse_peer
from tests import orthanc
from tests.conftest import OPERATOR, CliResult, canary_tokens_in, cli, make_vault, tree_digest

pytestmark = orthanc.needs_orthanc()

#: The patients whose studies are fetched (P03's hold JPEG, JPEG-LS, JPEG 2000 and deflate).
PATIENTS = ("P01", "P03")
#: Our AE title, as the test Orthanc knows it.
CALLING = "PSEUDO"
UNKNOWN = "NOSUCHACC01"
#: Fetches and runs without the pixel step: what is compared is what the PACS sends and how the
#: fetch writes it (the pixel step's output is compared with ``pseudo run``'s by the node's
#: tests); its OCR of P03's ultrasound images, three times, was most of this module's time.
PIXELS = ("--pixels", "off")


@dataclass
class Pacs:
    """The test Orthanc with the canary corpus, and the corpus files of each accession."""

    server: orthanc.Orthanc
    move_port: int
    files: dict[str, list[Path]]  # accession number -> corpus files of its study


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, canary_dir: Path) -> Iterator[Pacs]:
    """Orthanc holding the whole canary corpus, knowing our AE title at 127.0.0.1."""
    corpus = sorted(path for path in canary_dir.rglob("*.dcm") if path.is_file())
    files: dict[str, list[Path]] = {}
    for path in corpus:
        accession = str(pydicom.dcmread(path, stop_before_pixels=True).AccessionNumber)
        files.setdefault(accession, []).append(path)
    move_port = orthanc.free_port()
    with orthanc.server(tmp_path_factory.mktemp("orthanc"), {CALLING: move_port}) as server:
        server.upload(corpus)
        assert len(server.instances()) == len(corpus)
        yield Pacs(server, move_port, files)


def chosen(pacs: Pacs) -> list[str]:
    """The accession numbers of the chosen patients' studies."""
    return sorted(
        accession
        for accession, paths in pacs.files.items()
        if any(path.name.startswith(PATIENTS) for path in paths)
    )


def fetch(pacs: Pacs, base: Path, accessions: list[str], output: str, *extra: str) -> CliResult:
    """``pseudo fetch`` of ``accessions`` from the test Orthanc into ``base/output``."""
    listing = base / f"{output}.txt"
    listing.write_text("# accession numbers\n\n" + "\n".join(accessions) + "\n")
    os.environ["PSEUDO_PASSPHRASE"] = OPERATOR
    args: list[str | Path] = ["fetch", "--project", "trial", "--vault", base / "vault", "--json"]
    args += ["--quiet", "--from", pacs.server.peer, "--accession-list", listing]
    args += ["--output", base / output, "--workers", "2", *PIXELS, *extra]
    try:
        return cli(*args)
    finally:
        del os.environ["PSEUDO_PASSPHRASE"]


@dataclass
class First:
    """The first fetch of the chosen studies and an unknown accession number."""

    base: Path
    result: CliResult
    data: dict[str, Any]


@pytest.fixture(scope="module")
def first(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> First:
    """Fetch the chosen studies, and an accession number the PACS does not have, last."""
    base = tmp_path_factory.mktemp("fetch")
    make_vault(base / "vault")
    result = fetch(pacs, base, [*chosen(pacs), UNKNOWN], "out")
    return First(base, result, result.json())


def outputs(root: Path) -> dict[str, str]:
    """The SHA-256 of each output file under ``root`` (not reports, not temporary files)."""
    return {path: digest for path, digest in tree_digest(root).items() if is_output_file(path)}


def run(source: Path, base: Path, output: str) -> Path:
    """``pseudo run`` of ``source`` into ``base/output`` with the fetch's vault."""
    os.environ["PSEUDO_PASSPHRASE"] = OPERATOR
    try:
        result = cli(
            *("run", source, base / output, "--project", "trial", "--vault", base / "vault"),
            *("--quiet", "--workers", "2", *PIXELS),
        )
    finally:
        del os.environ["PSEUDO_PASSPHRASE"]
    assert result.code == 0, result.stderr
    return base / output


def test_every_instance_arrives_as_pseudo_run_writes_it(pacs: Pacs, first: First) -> None:
    accessions = chosen(pacs)
    assert first.result.code == 1, first.result.stderr  # the unknown accession number
    lines = first.data["lines"]
    assert [line["line"] for line in lines] == list(range(3, 3 + len(accessions) + 1))
    for accession, line in zip(accessions, lines, strict=False):
        expected = len(pacs.files[accession])
        assert (line["studies"], line["instances"], line["fetched"]) == (1, expected, expected)
        assert (line["written"], line["missing"], line["problem"]) == (expected, 0, None)
    assert lines[-1]["problem"] == "no study has this accession number"
    assert lines[-1]["fetched"] == 0
    # the same output paths (pseudonyms, UIDs) and data sets as a run of the corpus files
    originals = first.base / "originals"
    originals.mkdir()
    for accession in accessions:
        for path in pacs.files[accession]:
            (originals / path.name).symlink_to(path)
    by_run = run(originals, first.base, "out-run")
    fetched, ran = outputs(first.base / "out"), outputs(by_run)
    assert sorted(fetched) == sorted(ran)
    assert len(fetched) == sum(len(pacs.files[a]) for a in accessions)
    for relative in fetched:
        ours = pydicom.dcmread(first.base / "out" / relative)
        theirs = pydicom.dcmread(by_run / relative)
        for dataset in (ours, theirs):  # Orthanc sends as OB a Pixel Data a corpus file has
            if "PixelData" in dataset:  # as OW: the same bytes
                dataset["PixelData"].VR = "OB"
        assert ours == theirs, relative
        assert ours.file_meta == theirs.file_meta, relative


def test_no_canary_token_and_no_accession_number_anywhere(
    pacs: Pacs, first: First, answer_key: dict[str, Any]
) -> None:
    chosen_files = {path.name for a in chosen(pacs) for path in pacs.files[a]}
    tokens = {
        token
        for name, entry in answer_key["files"].items()
        if Path(name).name in chosen_files
        for token in entry["canaries"]
    }
    assert tokens
    for path in (first.base / "out").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not canary_tokens_in(data, tokens), path
    said = first.result.stdout + first.result.stderr
    assert not [a for a in [*chosen(pacs), UNKNOWN] if a in said]


def test_outputs_are_byte_identical_to_pseudo_run_of_what_the_pacs_sends(
    pacs: Pacs, first: First
) -> None:
    sent = first.base / "as-sent"
    sent.mkdir()
    arrived: dict[str, bytes] = {}

    def keep(uid: str, data: bytes) -> bool:
        arrived[uid] = data
        return True

    peer = parse_peer(pacs.server.peer)
    with Finder(peer, CALLING) as finder:
        instances = [
            instance
            for accession in chosen(pacs)
            for study in finder.studies(accession)
            for instance in finder.instances(study)
        ]
    get_instances(peer, CALLING, instances, keep)
    for number, data in enumerate(arrived.values()):
        (sent / f"{number}.dcm").write_bytes(data)
    assert outputs(run(sent, first.base, "out-sent")) == outputs(first.base / "out")


def test_a_second_fetch_fetches_and_writes_nothing(pacs: Pacs, first: First) -> None:
    before = tree_digest(first.base / "out")
    again = fetch(pacs, first.base, [*chosen(pacs), UNKNOWN], "out")
    assert again.code == 1, again.stderr
    data = again.json()
    assert (data["fetched"], data["files"], data["written"]) == (0, 0, 0)
    for line, earlier in zip(data["lines"], first.data["lines"], strict=True):
        assert (line["already_fetched"], line["fetched"]) == (earlier["instances"], 0)
    assert tree_digest(first.base / "out") == before


def test_the_fetch_is_an_audited_run_and_its_staging_is_private_and_emptied(first: First) -> None:
    run_id = first.data["run_id"]
    with VaultSession(first.base / "vault") as session:
        records = [
            json.loads(r.details) | {"outcome": r.outcome}
            for r in session.audit.records()
            if r.action == AuditAction.RUN
        ]
    mine = [r for r in records if r["run_id"] == run_id]
    assert [r["outcome"] for r in mine] == ["started", "completed"]
    assert mine[-1]["written"] == first.data["written"]
    staging = first.base / "vault" / "fetch"
    folders = [staging, *(p for p in staging.rglob("*") if p.is_dir())]
    assert all(stat.S_IMODE(folder.stat().st_mode) == 0o700 for folder in folders)
    assert not [p for p in staging.rglob("*.dcm")]


def test_c_move_to_our_own_scp_gives_the_same_files(pacs: Pacs, first: First) -> None:
    accession = chosen(pacs)[0]
    moved = fetch(
        pacs,
        first.base,
        [accession],
        "out-move",
        "--move-to",
        f"127.0.0.1:{pacs.move_port}:{CALLING}",
    )
    assert moved.code == 0, moved.stderr
    assert moved.json()["lines"][0]["fetched"] == len(pacs.files[accession])
    by_move, by_get = outputs(first.base / "out-move"), outputs(first.base / "out")
    assert by_move and all(by_get[path] == digest for path, digest in by_move.items())


def test_a_pacs_that_is_down_is_one_clear_line(pacs: Pacs, tmp_path: Path) -> None:
    make_vault(tmp_path / "vault")
    down = Pacs(orthanc.Orthanc(orthanc.free_port(), 0, tmp_path), 0, pacs.files)
    result = fetch(down, tmp_path, chosen(pacs)[:1], "out")
    assert down.server.peer in result.stderr
    assert result.code == 5, result.stderr
    assert result.stderr.count("\n") == 1 and "nothing answers" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_calling_ae_title_the_pacs_does_not_know_is_rejected(pacs: Pacs, tmp_path: Path) -> None:
    make_vault(tmp_path / "vault")
    result = fetch(pacs, tmp_path, chosen(pacs)[:1], "out", "--ae-title", "STRANGER")
    assert result.code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "rejected" in result.stderr
    assert not (tmp_path / "out").exists()
