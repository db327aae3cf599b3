"""``pseudo dicomdir``: standard DICOM media (DICOMDIR) from pseudonymized output."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pseudo.cli.common import EXIT_ATTENTION, emit_json, err, printable
from pseudo.review.dicomdir import DEFAULT_FILESET_ID, build_media


def dicomdir_command(
    output: Annotated[
        Path, typer.Argument(metavar="OUTPUT", help="The output folder of `pseudo run`.")
    ],
    media: Annotated[
        Path,
        typer.Argument(metavar="MEDIA", help="New (or empty) folder for the media; not in OUTPUT."),
    ],
    fileset_id: Annotated[
        str,
        typer.Option("--fileset-id", help="File-set ID: up to 16 of A-Z, 0-9, '_' and space."),
    ] = DEFAULT_FILESET_ID,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the media's counts as JSON on stdout.")
    ] = False,
) -> None:
    """Build standard DICOM media (MEDIA/DICOMDIR and its File-set) from the .dcm files of OUTPUT.

    pydicom's File-set copies every DICOM file under OUTPUT (not OUTPUT/.pseudo-tmp) into
    MEDIA/PT000000/ST000000/SE000000/IM000000... and writes MEDIA/DICOMDIR. Its records take
    their values from the pseudonymized files: pseudonyms, shifted dates, remapped UIDs. MEDIA
    must be new or empty and not inside OUTPUT; on any error it is left as it was.

    A file the File-set cannot index is left off the media and listed with the reason (exit
    1); the rest is built. A study whose Study ID is empty (the DICOMDIR's STUDY record needs
    one) gets its number on the media as Study ID, in the DICOMDIR only.

    Example: pseudo dicomdir /data/export /data/cd-image --fileset-id LUNGTRIAL
    """
    summary = build_media(output, media, fileset_id)  # a MediaError is one line, by its kind
    if as_json:
        emit_json(summary.to_json())
    duplicates = (
        f"; {summary.duplicates} duplicate SOP Instance UIDs left out" if summary.duplicates else ""
    )
    skipped = (
        f"; {summary.skipped} .dcm files that are not DICOM skipped" if summary.skipped else ""
    )
    invented = (
        f"; {summary.invented_study_ids} studies without a Study ID numbered in the DICOMDIR"
        if summary.invented_study_ids
        else ""
    )
    err.print(
        f"media: {summary.instances} instances, {summary.patients} patients, "
        f"{summary.studies} studies, {summary.series} series in {printable(summary.media)} "
        f"(File-set ID {summary.fileset_id}){duplicates}{skipped}{invented}",
        markup=False,
    )
    if summary.refused:
        err.print(f"{len(summary.refused)} files left off the media:", markup=False)
        for file, reason in summary.refused:
            err.print(f"  {printable(file)}: {printable(reason)}", markup=False)
        raise typer.Exit(EXIT_ATTENTION)
