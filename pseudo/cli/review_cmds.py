"""``pseudo diff``, ``pseudo inspect`` and ``pseudo dump``: look at data before and after."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import pydicom
import typer
from rich.text import Text

from pseudo.cli.common import UserError, emit_json, err, out
from pseudo.io.dicomio import NotDicom, sniff
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.review.diff_text import TextDiff, summary_lines
from pseudo.review.diff_tree import TreeDiff, diff_paths
from pseudo.review.dump import dump_file
from pseudo.review.inspect_text import inspect_lines
from pseudo.review.json_text import dumps_indented
from pseudo.review.report_data import UNCHANGED

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
ShowValues = Annotated[bool, typer.Option("--show-values", help="Include the values themselves.")]


def diff_command(
    a: Annotated[Path, typer.Argument(help="A file or tree (e.g. the input).")],
    b: Annotated[Path, typer.Argument(help="A file or tree (e.g. the output).")],
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write one CSV row per attribute ('-': stdout).")
    ] = None,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML report.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Run report pairing A with B.")
    ] = None,
    as_json: JsonOption = False,
    show_values: ShowValues = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="List unchanged (kept) attributes too.")
    ] = False,
    summary: Annotated[
        bool, typer.Option("--summary", help="Counts per attribute and change, across files.")
    ] = False,
) -> None:
    """Compare two files or trees: per attribute removed, emptied, replaced, shifted, remapped,
    cleaned, kept or added, at every depth.

    Trees are paired by the run report beside B (B.pseudo-run/), else by identical pixel data,
    else by path. Prints one line per change, grouped by file (--all adds the unchanged ones;
    --summary counts them across files instead). Values are masked unless --show-values.

    Example: pseudo diff /data/incoming /data/export --html review.html
    """
    for path in (a, b):
        if not path.exists():
            raise UserError(f"{path}: not found")
    result = diff_paths(a, b, with_values=show_values, report=report)
    if html_path is not None:
        from pseudo.review.report_html import render  # images: numpy, PIL and the pixel code

        html_path.write_text(render(result, with_values=show_values), encoding="utf-8")
        err.print(f"HTML report: {html_path}", markup=False)
    if csv_path is not None:
        text = result.to_csv(with_values=show_values)
        if str(csv_path) == "-":
            out.print(text, end="", markup=False, highlight=False)
        else:
            csv_path.write_text(text, encoding="utf-8")
    if as_json:
        sys.stdout.write(dumps_indented(result.to_json(with_values=show_values)) + "\n")
        sys.stdout.flush()
    if as_json or csv_path is not None:
        return
    _print_diff(result, show_all=show_all, summary=summary)
    hidden = sum(1 for p in result.pairs for c in p.changes if c.kind in UNCHANGED)
    unchanged = "" if show_all or not hidden else f"; {hidden} unchanged not shown (--all)"
    err.print(
        f"{len(result.pairs)} pairs (by {result.paired_by}){unchanged}; "
        f"{len(result.only_a)} only in A, {len(result.only_b)} only in B",
        markup=False,
    )


def _print_lines(lines: Iterable[str], bold: Callable[[str], bool] = lambda _: False) -> None:
    """Plain lines on stdout (fast) when it is not a terminal, else through rich."""
    if not out.is_terminal:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return
    for line in lines:
        out.print(Text(line, style="bold" if bold(line) else ""))


def _print_diff(result: TreeDiff, *, show_all: bool, summary: bool) -> None:
    """The changes (or the counts) as plain lines; headers in bold on a terminal."""
    if summary:
        lines: Iterable[str] = summary_lines(result, show_all=show_all)
    else:
        lines = TextDiff(result, width=out.width, show_all=show_all).lines()
    heading = "attribute " if summary else "file "
    _print_lines(lines, lambda line: line.startswith(heading))


def inspect_command(
    path: Annotated[Path, typer.Argument(help="A DICOM file or a tree.")],
    as_json: JsonOption = False,
) -> None:
    """Show a file or tree as Patient -> Study -> Series -> Instances, with counts, modalities,
    date ranges, private creators and the attributes that differ within each level.

    Values are shown as they are in the files: run it on data you may look at.

    Example: pseudo inspect /data/export
    """
    from pseudo.review.inspect_tree import count_levels, count_pixels, inspect_path

    if not path.exists():
        raise UserError(f"{path}: not found")
    nodes = inspect_path(path)
    patients = [node.to_json() for node in nodes]
    counts = count_levels(nodes)
    pixels = count_pixels(nodes)
    if as_json:
        emit_json({"counts": counts, "pixels": pixels, "patients": patients})
        return
    _print_lines(inspect_lines(path, patients, out.width))
    err.print(", ".join(f"{count} {level}" for level, count in counts.items()) or "no DICOM files")
    if pixels["images"]:
        rules = ", ".join(f"{name} {count}" for name, count in pixels["rules"].items())
        err.print(
            f"images: {pixels['images']}; burned-in text blanked in {pixels['redacted']} "
            f"(by rule {pixels['by_rule']}{f': {rules}' if rules else ''}; by detection "
            f"{pixels['by_detection']}); examined, no text {pixels['clean']}; not examined "
            f"{pixels['not_examined']}",
            markup=False,
        )


def dump_command(
    file: Annotated[Path, typer.Argument(help="A DICOM file.")],
    full: Annotated[bool, typer.Option("--full", help="Do not shorten long values.")] = False,
) -> None:
    """Print every attribute at every depth with tag, VR, keyword and value, like dcmdump.

    Example: pseudo dump scan.dcm
    """
    if not file.exists():
        raise UserError(f"{file}: not found")
    try:
        sniff(file)
    except NotDicom as exc:
        raise UserError(f"{file}: not a DICOM file ({exc})") from exc
    except OSError as exc:
        raise UserError(f"{file}: cannot be read ({exc.__class__.__name__})") from exc
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(file, force=True)
    except Exception as exc:
        raise UserError(f"{file}: not a readable DICOM file ({exc.__class__.__name__})") from exc
    with quiet_pydicom():
        for line in dump_file(ds, full=full):
            out.print(line, markup=False, highlight=False)
