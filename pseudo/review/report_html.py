"""A single, self-contained HTML page of a ``pseudo diff``, to review and archive.

No external resource is loaded: the style sheet and the filtering script are inline, so the page
opens anywhere, offline, years later. A reviewer filters by change and by attribute; the rows
are embedded as data and drawn page by page.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime

from pseudo import __version__
from pseudo.review.diff import KINDS
from pseudo.review.diff_tree import TreeDiff

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
h1 { font-size: 1.4rem; } table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; position: sticky; top: 0; }
tr.removed td.change, tr.emptied td.change { color: #a00; }
tr.replaced td.change, tr.remapped td.change, tr.shifted td.change { color: #a60; }
tr.cleaned td.change { color: #06a; } tr.kept td.change { color: #080; }
#controls { margin: 1rem 0; display: flex; gap: 1rem; align-items: center; }
.summary td:last-child { text-align: right; } code { font-size: .85rem; }
"""

_SCRIPT = """
const data = JSON.parse(document.getElementById('data').textContent);
const body = document.querySelector('#changes tbody');
const PAGE = 1000;
let matched = [], shown = 0;
function cell(text, cls) {
  const td = document.createElement('td');
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}
function more() {
  const stop = Math.min(matched.length, shown + PAGE);
  const fragment = document.createDocumentFragment();
  for (; shown < stop; shown++) {
    const r = data.rows[matched[shown]];
    const tr = document.createElement('tr');
    tr.className = r[4];
    tr.dataset.kind = r[4];
    tr.dataset.attribute = r[1];
    tr.append(cell(data.files[r[0]]), cell(r[1]), cell(r[2]), cell(r[3]), cell(r[4], 'change'),
              cell(r[5]));
    for (const value of r.slice(6)) tr.append(cell(value));
    fragment.append(tr);
  }
  body.append(fragment);
  const rest = matched.length - shown;
  document.getElementById('count').textContent = matched.length + ' of ' + data.rows.length +
    ' rows' + (rest ? ' (first ' + shown + ' shown)' : '');
  document.getElementById('more').hidden = !rest;
}
function applyFilter() {
  const kind = document.getElementById('kind').value;
  const text = document.getElementById('attribute').value.toLowerCase();
  matched = [];
  data.rows.forEach((r, i) => {
    if ((!kind || r[4] === kind) && (!text || r[1].toLowerCase().includes(text))) matched.push(i);
  });
  body.replaceChildren();
  shown = 0;
  more();
}
document.getElementById('kind').addEventListener('change', applyFilter);
document.getElementById('attribute').addEventListener('input', applyFilter);
document.getElementById('more').addEventListener('click', more);
applyFilter();
"""


def _data(diff: TreeDiff, with_values: bool) -> str:
    """Every row as compact JSON (file names listed once), safe inside a script element."""
    files: dict[str, int] = {}
    rows = []
    for row in diff.rows(with_values=with_values):
        index = files.setdefault(row["b"], len(files))
        values = [row["before"], row["after"]] if with_values else []
        rows.append(
            [index, row["attribute"], row["tag"], row["vr"], row["change"], row["detail"], *values]
        )
    text = json.dumps({"files": list(files), "rows": rows}, separators=(",", ":"))
    return text.replace("</", "<\\/")


def render(diff: TreeDiff, *, with_values: bool = False) -> str:
    """The page, as a string: the rows are data, drawn a thousand at a time, so that a trial's
    review (hundreds of thousands of rows) still opens quickly."""
    e = html.escape
    summary_rows = "".join(
        f"<tr><td><code>{e(path)}</code></td><td>{e(kind)}</td><td>{count}</td></tr>"
        for (path, kind), count in sorted(diff.summary().items())
        if kind != "kept"
    )
    value_heads = "<th>before</th><th>after</th>" if with_values else ""
    options = "".join(f'<option value="{k}">{k}</option>' for k in KINDS)
    masked = (
        ""
        if with_values
        else "<p>Values are not shown (run with --show-values to include them).</p>"
    )
    generated = datetime.now(UTC).replace(microsecond=0).isoformat()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pseudo diff</title>
<style>{_STYLE}</style></head><body>
<h1>pseudo diff</h1>
<p>A: <code>{e(diff.a_label)}</code><br>B: <code>{e(str(diff.b))}</code><br>
{len(diff.pairs)} pairs of files (paired by {e(diff.paired_by)}); {len(diff.only_a)} only in A,
{len(diff.only_b)} only in B. Made by pseudo {e(__version__)} on {e(generated)}.</p>
{masked}
<h2>Summary</h2>
<table class="summary"><thead><tr><th>attribute</th><th>change</th><th>count</th></tr></thead>
<tbody>{summary_rows}</tbody></table>
<h2>Every attribute</h2>
<div id="controls">
<label>Change <select id="kind"><option value="">all</option>{options}</select></label>
<label>Attribute <input id="attribute" type="search" placeholder="e.g. PatientName"></label>
<span id="count"></span></div>
<table id="changes"><thead><tr><th>file (B)</th><th>attribute</th><th>tag</th><th>VR</th>
<th>change</th><th>detail</th>{value_heads}</tr></thead>
<tbody></tbody></table>
<p><button id="more" hidden>Show 1000 more</button></p>
<script type="application/json" id="data">{_data(diff, with_values)}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
