"""A single, self-contained HTML page of a ``pseudo diff``, to review and archive.

No external resource is loaded: the style sheet and the filtering script are inline, so the page
opens anywhere, offline, years later. The page opens on a summary per patient and study (counts
of each change); below it the changes themselves, filtered (changed only by default; by change,
by attribute, by patient or study) and drawn a page at a time from rows embedded as compact data
(see :mod:`pseudo.review.report_data`). An images section closes the page: each image before
and after, the regions whose pixels changed outlined (:mod:`pseudo.review.thumbnails`).

Patients and studies are labelled by B's values only where they differ from A's (pseudonyms,
shifted dates, new UIDs); values themselves are left out unless asked for.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

from pseudo import __version__
from pseudo.review.diff import KINDS
from pseudo.review.diff_tree import TreeDiff
from pseudo.review.report_data import ReportData, StudyCounts, build
from pseudo.review.report_page import SCRIPT, STYLE
from pseudo.review.thumbnails import LIMIT, thumbnail_pair

_e = html.escape


def short_uid(text: str, keep: int = 8) -> str:
    """A long UID (or any long word) as its first and last ``keep`` characters."""
    return " ".join(
        f"{word[:keep]}\u2026{word[-keep:]}" if len(word) > 2 * keep + 3 else word
        for word in text.split(" ")
    )


def _counts(counts: dict[str, int]) -> str:
    return "".join(
        f'<td class="n{" zero" if not counts[k] else ""}">{counts[k]}</td>' for k in KINDS
    )


def _study_row(data: ReportData, index: int, study: StudyCounts, first: bool) -> str:
    patient = data.patients[study.patient]
    cells = f'<td title="{_e(patient)}">{_e(patient) if first else ""}</td>'
    cells += f'<td title="{_e(study.label)}">{_e(short_uid(study.label))}</td>'
    return (
        f'<tr data-where="s{index}">{cells}<td class="n">{study.files}</td>'
        f"{_counts(study.counts)}</tr>"
    )


def _summary(data: ReportData) -> str:
    """The per-patient / per-study table; a click on a row filters the changes to it."""
    total = dict.fromkeys(KINDS, 0)
    for study in data.studies:
        for kind, count in study.counts.items():
            total[kind] += count
    files = sum(study.files for study in data.studies)
    rows = [
        f'<tr class="total" data-where=""><td>all patients</td><td>{len(data.studies)} studies'
        f'</td><td class="n">{files}</td>{_counts(total)}</tr>'
    ]
    seen: set[int] = set()
    for index, study in enumerate(data.studies):
        rows.append(_study_row(data, index, study, study.patient not in seen))
        seen.add(study.patient)
    heads = "".join(f'<th class="n">{k}</th>' for k in KINDS)
    return (
        '<div class="wrap"><table id="summary"><thead><tr><th>patient</th><th>study</th>'
        f'<th class="n">files</th>{heads}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


def _where_options(data: ReportData) -> str:
    """The patient / study filter: every patient, each followed by its studies."""
    options = ['<option value="">all patients and studies</option>']
    for patient_index, patient in enumerate(data.patients):
        options.append(f'<option value="p{patient_index}">{_e(patient)}</option>')
        for index, study in enumerate(data.studies):
            if study.patient == patient_index:
                label = f"\u2003study {short_uid(study.label)}"
                options.append(f'<option value="s{index}">{_e(label)}</option>')
    return "".join(options)


def _attribute_list(data: ReportData) -> str:
    """Suggestions for the attribute filter: every attribute name (items collapsed)."""
    names = sorted({str(a[0]).rsplit(".", 1)[-1] for a in data.payload["attrs"]})
    return "".join(f'<option value="{_e(name)}">' for name in names)


def _controls(data: ReportData) -> str:
    kinds = "".join(f'<option value="{k}">{k}</option>' for k in KINDS)
    return f"""<div id="controls">
<label><input id="changed" type="checkbox" checked> changed only</label>
<label>Change <select id="kind"><option value="">any</option>{kinds}</select></label>
<label>Attribute <input id="attribute" type="search" list="attributes"
 placeholder="name, tag or creator"></label><datalist id="attributes">{_attribute_list(data)}
</datalist>
<label>Patient <select id="where">{_where_options(data)}</select></label>
<span id="pager"><button id="prev">&larr; previous</button><span id="page"></span>
<button id="next">next &rarr;</button></span>
<span id="count"></span></div>"""


def _changes_table(with_values: bool) -> str:
    values = '<col class="value"><col class="value">' if with_values else ""
    value_heads = "<th>before</th><th>after</th>" if with_values else ""
    return (
        '<table id="changes"><colgroup><col class="attribute"><col class="change">'
        f'<col class="detail">{values}<col class="tag"><col class="vr"></colgroup>'
        f"<thead><tr><th>attribute</th><th>change</th><th>detail</th>{value_heads}"
        "<th>tag</th><th>VR</th></tr></thead><tbody></tbody></table>"
    )


def _images(diff: TreeDiff, with_values: bool) -> str:
    """The images section: per image, before and after, the changed regions outlined (the
    removed text hidden in "before" unless values are shown)."""
    figures = []
    images = 0
    for pair in diff.pairs:
        if pair.files is None or images >= LIMIT:
            continue
        thumbs = thumbnail_pair(*pair.files, pair.b, with_values=with_values)
        if thumbs is None:
            continue
        images += 1
        if thumbs.regions:
            pictures = (
                f'<img class="before" alt="before" src="{thumbs.before}">'
                f'<img class="after" alt="after" src="{thumbs.after}">'
            )
            caption = f"{thumbs.regions} region(s) changed"
        else:  # one picture: before and after are the same pixels
            pictures = f'<img class="same" alt="before and after" src="{thumbs.after}">'
            caption = "pixels unchanged"
        figures.append(
            f'<figure class="image" data-regions="{thumbs.regions}">{pictures}'
            f"<figcaption>{_e(short_path(pair.b))}: {caption}</figcaption></figure>"
        )
    hidden = "" if with_values else " (in &ldquo;before&rdquo;, hidden: --show-values shows it)"
    note = (
        f"{images} images, before and after (once when the pixels did not change); the "
        f"regions whose pixels changed are outlined in red{hidden}."
        if images
        else "No image in these pairs."
    )
    more = sum(1 for p in diff.pairs if p.files is not None) > LIMIT
    if more:
        note += f" Only the first {LIMIT} images are drawn."
    return (
        f'<section id="images"><h2>Images</h2><p id="images-note">{note}</p>'
        f'<div id="thumbnails">{"".join(figures)}</div></section>'
    )


def short_path(path: str) -> str:
    """The last two parts of an output path (series folder and file), for a caption."""
    return "/".join(path.split("/")[-2:])


def _header(diff: TreeDiff, with_values: bool) -> str:
    masked = "" if with_values else " Values are not shown (--show-values shows them)."
    generated = datetime.now(UTC).replace(microsecond=0).isoformat()
    return (
        f'<h1>pseudo diff</h1><p class="meta">A: <code>{_e(diff.a_label)}</code> &middot; '
        f"B: <code>{_e(str(diff.b))}</code><br>{len(diff.pairs)} pairs of files (paired by "
        f"{_e(diff.paired_by)}); {len(diff.only_a)} only in A, {len(diff.only_b)} only in B. "
        f"pseudo {_e(__version__)}, {_e(generated)}.{masked}</p>"
    )


def render(diff: TreeDiff, *, with_values: bool = False) -> str:
    """The page, as a string: a summary, then the rows drawn a page at a time from data, so that
    a trial's review (hundreds of thousands of rows) still opens quickly."""
    data = build(diff, with_values=with_values)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pseudo diff</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
{_header(diff, with_values)}
<h2>Summary by patient and study</h2>
{_summary(data)}
<h2>Changes</h2>
{_controls(data)}
{_changes_table(with_values)}
{_images(diff, with_values)}
<script type="application/json" id="data">{data.json()}</script>
<script>{SCRIPT}</script>
</body></html>
"""
