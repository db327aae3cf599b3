"""``pseudo diff``, ``pseudo inspect`` and ``pseudo dump``: look at data before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pydicom
import typer
from rich.table import Table
from rich.tree import Tree

from pseudo.cli.common import UserError, emit_json, err, out
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.review.diff_tree import diff_paths
from pseudo.review.dump import dump_file
from pseudo.review.inspect_tree import count_levels, inspect_path
from pseudo.review.report_html import render

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
) -> None:
    """Compare two files or trees: per attribute removed, emptied, replaced, shifted, remapped,
    cleaned, kept or added, at every depth.

    Trees are paired by the run report beside B (B.pseudo-run/), else by identical pixel data,
    else by path. Values are masked unless --show-values.

    Example: pseudo diff /data/incoming /data/export --html review.html
    """
    for path in (a, b):
        if not path.exists():
            raise UserError(f"{path}: not found")
    result = diff_paths(a, b, with_values=show_values, report=report)
    if html_path is not None:
        html_path.write_text(render(result, with_values=show_values), encoding="utf-8")
        err.print(f"HTML report: {html_path}")
    if csv_path is not None:
        text = result.to_csv(with_values=show_values)
        if str(csv_path) == "-":
            out.print(text, end="", markup=False, highlight=False)
        else:
            csv_path.write_text(text, encoding="utf-8")
    if as_json:
        emit_json(result.to_json(with_values=show_values))
    if as_json or csv_path is not None:
        return
    if len(result.pairs) == 1:
        table = Table(
            "attribute", "VR", "change", "detail", *(["before", "after"] if show_values else [])
        )
        for change in result.pairs[0].changes:
            values = [change.before or "", change.after or ""] if show_values else []
            table.add_row(change.path, change.vr, change.kind, change.detail, *values)
    else:
        table = Table("attribute", "change", "files")
        for (attribute, kind), count in sorted(result.summary().items()):
            table.add_row(attribute, kind, str(count))
    out.print(table)
    err.print(
        f"{len(result.pairs)} pairs (by {result.paired_by}); "
        f"{len(result.only_a)} only in A, {len(result.only_b)} only in B"
    )


#: Instances listed under a series in the terminal (all of them are in --json).
INSTANCES_SHOWN = 5


def _tree(node: dict[str, Any], tree: Tree) -> None:
    if node["level"] == "instance":
        number = f"#{node['instance_number']} " if node.get("instance_number") else ""
        tree.add(f"[bold]instance[/] {number}{node['label']}  [dim]{node['file']}[/]")
        return
    details = [f"{node['instances']} instances"]
    if node["modalities"]:
        details.append("modalities " + ", ".join(node["modalities"]))
    if node["date_range"]:
        details.append("dates " + "..".join(dict.fromkeys(node["date_range"])))
    if node["private_creators"]:
        details.append("private: " + ", ".join(node["private_creators"]))
    if node["differing"]:
        shown = node["differing"][:12]
        more = f" (+{len(node['differing']) - 12})" if len(node["differing"]) > 12 else ""
        details.append("differs: " + ", ".join(shown) + more)
    branch = tree.add(f"[bold]{node['level']}[/] {node['label']}  [dim]{'; '.join(details)}[/]")
    children = node.get("children", [])
    limit = INSTANCES_SHOWN if children and children[0]["level"] == "instance" else len(children)
    for child in children[:limit]:
        _tree(child, branch)
    if len(children) > limit:
        branch.add(f"[dim]... {len(children) - limit} more instances (all in --json)[/]")


def inspect_command(
    path: Annotated[Path, typer.Argument(help="A DICOM file or a tree.")],
    as_json: JsonOption = False,
) -> None:
    """Show a file or tree as Patient -> Study -> Series -> Instances, with counts, modalities,
    date ranges, private creators and the attributes that differ within each level.

    Values are shown as they are in the files: run it on data you may look at.

    Example: pseudo inspect /data/export
    """
    if not path.exists():
        raise UserError(f"{path}: not found")
    nodes = inspect_path(path)
    patients = [node.to_json() for node in nodes]
    counts = count_levels(nodes)
    if as_json:
        emit_json({"counts": counts, "patients": patients})
        return
    tree = Tree(f"[bold]{path}[/]")
    for patient in patients:
        _tree(patient, tree)
    out.print(tree)
    err.print(", ".join(f"{count} {level}" for level, count in counts.items()) or "no DICOM files")


def dump_command(
    file: Annotated[Path, typer.Argument(help="A DICOM file.")],
    full: Annotated[bool, typer.Option("--full", help="Do not shorten long values.")] = False,
) -> None:
    """Print every attribute at every depth with tag, VR, keyword and value, like dcmdump.

    Example: pseudo dump scan.dcm
    """
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(file, force=True)
    except Exception as exc:
        raise UserError(f"{file}: not a readable DICOM file ({exc.__class__.__name__})") from exc
    with quiet_pydicom():
        for line in dump_file(ds, full=full):
            out.print(line, markup=False, highlight=False)
