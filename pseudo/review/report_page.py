"""The style sheet and the script of the HTML review report (inline: the page loads nothing).

The script reads the rows' data (see :mod:`pseudo.review.report_data`), filters them (changed
only by default, by change, by attribute, by patient or study) and draws one page of rows at a
time, with the file's short path above its rows (the full path on hover).
"""

from __future__ import annotations

#: Rows drawn per page of the "Changes" table.
PAGE_SIZE = 250

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem 1.25rem; color: #222; font-size: 14px; }
h1 { font-size: 1.25rem; margin: 0 0 .25rem; } h2 { font-size: 1.05rem; margin: 1.25rem 0 .4rem; }
p.meta { margin: 0; color: #555; font-size: .8rem; } code { font-size: .85em; }
table { border-collapse: collapse; font-size: .8rem; }
th, td { border: 1px solid #ddd; padding: .2rem .4rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; position: sticky; top: 0; z-index: 1; }
#summary td.n, #summary th.n { text-align: right; } #summary td.n.zero { color: #bbb; }
#summary tbody tr { cursor: pointer; } #summary tbody tr:hover { background: #eef4ff; }
#summary tr.total td { font-weight: 600; } #summary tr.selected { background: #dde8ff; }
.wrap { overflow-x: auto; max-width: 100%; }
#controls { margin: .5rem 0; display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center;
  font-size: .85rem; }
#controls input[type=search] { width: 14rem; } #controls select { max-width: 18rem; }
#pager { display: flex; gap: .5rem; align-items: center; }
#changes { width: 100%; table-layout: fixed; }
#changes col.attribute { width: auto; } #changes col.change { width: 6rem; }
#changes col.detail { width: 6rem; } #changes col.tag { width: 6.5rem; }
#changes col.vr { width: 2.75rem; } #changes col.value { width: 20%; }
#changes td { overflow-wrap: anywhere; }
#changes td.change, #changes td.tag, #changes td.vr { white-space: nowrap; overflow: hidden; }
#changes tr.file td { background: #f7f7f7; font-weight: 600; border-top: 2px solid #bbb; }
#changes tr.file span { font-weight: normal; color: #555; }
.creator { color: #555; font-style: italic; }
td.change { font-weight: 600; }
tr.removed td.change, tr.emptied td.change { color: #a00; }
tr.replaced td.change, tr.remapped td.change, tr.shifted td.change { color: #a60; }
tr.cleaned td.change { color: #06a; } tr.kept td.change { color: #080; }
tr.added td.change { color: #60a; }
#thumbnails { display: flex; flex-wrap: wrap; gap: .5rem; }
#thumbnails figure { margin: 0; font-size: .75rem; text-align: center; }
#thumbnails img { display: inline-block; margin: 0 1px; border: 1px solid #ccc; }
#thumbnails figcaption { max-width: 390px; overflow-wrap: anywhere; }
@media (max-width: 900px) {
  body { margin: .5rem; font-size: 13px; }
  th, td { padding: .15rem .25rem; } table { font-size: .72rem; }
  #summary th.n { font-size: .68rem; }
}
"""

SCRIPT = """
const data = JSON.parse(document.getElementById('data').textContent);
const PAGE = PAGE_SIZE;
const $ = id => document.getElementById(id);
const withValues = data.values;
const unchanged = new Set(data.unchanged.map(k => data.kinds.indexOf(k)));
// Each pattern decoded once: arrays of attribute, change, detail (and values).
const decoded = data.patterns.map(rows => {
  const out = {a: [], k: [], d: [], before: [], after: []};
  let code = 0;
  for (const row of rows) {
    const step = Array.isArray(row) ? row[0] : row;
    code += step;
    out.a.push(Math.floor(code / 8)); out.k.push(code % 8);
    out.d.push(Array.isArray(row) ? row[1] : 0);
    if (withValues) { out.before.push(row[2]); out.after.push(row[3]); }
  }
  return out;
});
const totalRows = data.files.reduce((s, f) => s + decoded[f[3]].a.length, 0);
const attrText = data.attrs.map(a => (a[0] + ' ' + a[1] + ' ' + a[3]).toLowerCase());
let matchedFiles = [], matchedRows = [], page = 0;

function shortPath(path, keep) {
  if (path.length <= keep) return path;
  const parts = path.split('/');
  return parts.map((p, i) => (p.length > 16 && (i < parts.length - 1 || p.length > 28))
    ? p.slice(0, 8) + '\u2026' + p.slice(-8) : p).join('/');
}
function shortWords(text) {
  return text.split(' ').map(w => w.length > 19 ? w.slice(0, 8) + '\u2026' + w.slice(-8) : w)
    .join(' ');
}
function shortAttribute(path) {
  if (path.length <= 60) return path;
  const parts = path.split('.');
  return parts.length > 3 ? parts[0] + '.\u2026.' + parts.slice(-2).join('.') : path;
}
function cell(tr, text, cls, title) {
  const td = document.createElement('td');
  if (cls) td.className = cls;
  if (title) td.title = title;
  td.textContent = text;
  tr.append(td);
  return td;
}
function where(value, file) {
  if (!value) return true;
  const study = data.files[file][2];
  if (value[0] === 's') return study === +value.slice(1);
  return data.studies[study][0] === +value.slice(1);
}
function applyFilter() {
  const kind = $('kind').value === '' ? -1 : data.kinds.indexOf($('kind').value);
  const changedOnly = $('changed').checked;
  const text = $('attribute').value.trim().toLowerCase();
  const attrOk = attrText.map(t => !text || t.includes(text));
  const place = $('where').value;
  matchedFiles = []; matchedRows = [];
  data.files.forEach((file, f) => {
    if (!where(place, f)) return;
    const rows = decoded[file[3]];
    for (let i = 0; i < rows.a.length; i++) {
      const k = rows.k[i];
      if (kind >= 0 ? k !== kind : (changedOnly && unchanged.has(k))) continue;
      if (!attrOk[rows.a[i]]) continue;
      matchedFiles.push(f); matchedRows.push(i);
    }
  });
  document.querySelectorAll('#summary tbody tr').forEach(
    tr => tr.classList.toggle('selected', (tr.dataset.where || '') === place));
  page = 0;
  draw();
}
function fileRow(f, columns) {
  const file = data.files[f];
  const study = data.studies[file[2]];
  const tr = document.createElement('tr');
  tr.className = 'file';
  const td = cell(tr, shortPath(file[0], 40), '', file[0] + '  (A: ' + file[1] + ')');
  td.colSpan = columns;
  const span = document.createElement('span');
  span.textContent = '  ' + data.patients[study[0]] + ' \u00b7 ' + shortWords(study[1]);
  span.title = study[1];
  td.append(span);
  return tr;
}
function changeRow(f, i) {
  const rows = decoded[data.files[f][3]];
  const attr = data.attrs[rows.a[i]];
  const kind = data.kinds[rows.k[i]];
  const tr = document.createElement('tr');
  tr.className = kind;
  tr.dataset.kind = kind;
  tr.dataset.attribute = attr[0];
  const td = cell(tr, shortAttribute(attr[0]), 'attribute', attr[0]);
  if (attr[3]) {
    const creator = document.createElement('span');
    creator.className = 'creator';
    creator.textContent = ' [' + attr[3] + ']';
    td.append(creator);
  }
  cell(tr, kind, 'change');
  cell(tr, data.details[rows.d[i]], 'detail');
  if (withValues) { cell(tr, rows.before[i], 'value'); cell(tr, rows.after[i], 'value'); }
  cell(tr, attr[1], 'tag');
  cell(tr, attr[2], 'vr');
  return tr;
}
function draw() {
  const pages = Math.max(1, Math.ceil(matchedRows.length / PAGE));
  page = Math.min(Math.max(page, 0), pages - 1);
  const start = page * PAGE, stop = Math.min(matchedRows.length, start + PAGE);
  const columns = withValues ? 7 : 5;
  const fragment = document.createDocumentFragment();
  let last = -1;
  for (let n = start; n < stop; n++) {
    if (matchedFiles[n] !== last) {
      last = matchedFiles[n];
      fragment.append(fileRow(last, columns));
    }
    fragment.append(changeRow(matchedFiles[n], matchedRows[n]));
  }
  document.querySelector('#changes tbody').replaceChildren(fragment);
  $('count').textContent = matchedRows.length + ' of ' + totalRows + ' rows' +
    (matchedRows.length ? ' \u00b7 rows ' + (start + 1) + '\u2013' + stop : '');
  $('page').textContent = 'page ' + (page + 1) + ' of ' + pages;
  $('prev').disabled = page === 0;
  $('next').disabled = page >= pages - 1;
}
$('kind').addEventListener('change', () => {
  if ($('kind').value && unchanged.has(data.kinds.indexOf($('kind').value)))
    $('changed').checked = false;
  applyFilter();
});
for (const id of ['changed', 'where']) $(id).addEventListener('change', applyFilter);
$('attribute').addEventListener('input', applyFilter);
$('prev').addEventListener('click', () => { page--; draw(); });
$('next').addEventListener('click', () => { page++; draw(); });
document.querySelectorAll('#summary tbody tr').forEach(tr => tr.addEventListener('click', () => {
  $('where').value = tr.dataset.where || '';
  applyFilter();
  $('controls').scrollIntoView();
}));
applyFilter();
""".replace("PAGE_SIZE", str(PAGE_SIZE))
