"""A single, self-contained HTML page of a ``pseudo diff``, to review and archive.

No external resource is loaded: the style sheet and the filtering script are inline, so the page
opens anywhere, offline, years later. A reviewer filters by change and by attribute.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

from pseudo import __version__
from pseudo.diff import KINDS
from pseudo.diff_tree import TreeDiff

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
function applyFilter() {
  const kind = document.getElementById('kind').value;
  const text = document.getElementById('attribute').value.toLowerCase();
  let shown = 0;
  for (const row of document.querySelectorAll('#changes tbody tr')) {
    const visible = (!kind || row.dataset.kind === kind) &&
                    (!text || row.dataset.attribute.toLowerCase().includes(text));
    row.hidden = !visible;
    if (visible) shown++;
  }
  document.getElementById('count').textContent = shown + ' of ' +
    document.querySelectorAll('#changes tbody tr').length + ' rows';
}
document.getElementById('kind').addEventListener('change', applyFilter);
document.getElementById('attribute').addEventListener('input', applyFilter);
applyFilter();
"""


def render(diff: TreeDiff, *, with_values: bool = False) -> str:
    """The page, as a string."""
    e = html.escape
    summary_rows = "".join(
        f"<tr><td><code>{e(path)}</code></td><td>{e(kind)}</td><td>{count}</td></tr>"
        for (path, kind), count in sorted(diff.summary().items())
        if kind != "kept"
    )
    value_heads = "<th>before</th><th>after</th>" if with_values else ""
    rows = []
    for row in diff.rows(with_values=with_values):
        values = f"<td>{e(row['before'])}</td><td>{e(row['after'])}</td>" if with_values else ""
        rows.append(
            f'<tr class="{e(row["change"])}" data-kind="{e(row["change"])}" '
            f'data-attribute="{e(row["attribute"])}"><td>{e(row["b"])}</td>'
            f"<td><code>{e(row['attribute'])}</code></td><td>{e(row['tag'])}</td><td>{e(row['vr'])}</td>"
            f'<td class="change">{e(row["change"])}</td><td>{e(row["detail"])}</td>{values}</tr>'
        )
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
<tbody>{"".join(rows)}</tbody></table>
<script>{_SCRIPT}</script>
</body></html>
"""
