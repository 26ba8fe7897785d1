"""results/index.html: every run in one page that stays small and quick at ten thousand runs.

The page holds each run as one compact row of data (its id, status, metrics and the arguments
that differ within its experiment) and draws only the rows in view; sorting and filtering work
on the data. A run's curves are not in the page: they are written once per change of its
history.csv to RESULTS/.expkit/curves/<experiment>/<run>.js and loaded when the run is ticked
(a script file beside the page, which file:// pages may load). The settings-over-seeds table is
drawn in full, exact, as in `expkit compare`.
"""

from __future__ import annotations

import os
import shutil
from html import escape
from pathlib import Path
from typing import Any

from expkit.reports.charts import HINT, chart_assets
from expkit.reports.report import _CSS, REPORT, _script_json, write_report
from expkit.rundir.dirs import job_label, resumable
from expkit.rundir.groups import NOT_SETTINGS
from expkit.rundir.results import Run, runs
from expkit.rundir.summaries import CACHE_DIR, RACY_NS
from expkit.rundir.values import as_typed, flag_of
from expkit.utils.files import atomic_write_text, replace_text
from expkit.utils.invocation import command

INDEX = "index.html"
#: the curves of each run, under the results folder: <experiment folder>/<run>.js
CURVES = f"{CACHE_DIR}/curves"

_INDEX_CSS = """
.groups td.best{font-weight:700}
body{max-width:none}td,th{padding:.25em .5em}th.sort:after{font-size:.8em}.scroll{overflow-x:auto;max-width:100%}.nowrap,th{white-space:nowrap}
.rows{max-height:75vh;overflow-y:auto}table.runs thead th{position:sticky;top:0;z-index:1}
input.filter{font:inherit;padding:.1em .4em;min-width:16em}
"""

_INDEX_JS = r"""
const data = JSON.parse(document.getElementById('runs-data').textContent);
const hint = document.getElementById('chart-hint').innerHTML;
const esc = v => String(v).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'})[c]);
// a row: [index, id, folder, status, started, epochs, best so far, resume command, SLURM job, [metrics], [args]]
const all = [];
data.experiments.forEach(e => e.rows.forEach(row => { all[row[0]] = {e, row}; }));
const shown = v => Array.isArray(v) ? v[0] : v;  // an argument: its text, or [text, number]
const summary = ({e, row}) => Object.fromEntries(e.metrics.map((m, j) => [m, row[9][j]]).filter(([, v]) => v !== null));
const args = ({e, row}) => ({...e.common, ...Object.fromEntries(e.args.map((a, j) => [a, shown(row[10][j])]).filter(([, v]) => v !== null))});
const picked = new Set();
const views = [];
function cells(e, row) {
  const [i, id, folder, status, started, epochs, best, resume, job, metrics, argv] = row;
  let html = `<td><input type="checkbox" class="pick" value="${i}"${picked.has(i) ? ' checked' : ''}></td>` +
    `<td class=nowrap><a href="${esc(encodeURI(folder + '/report.html'))}">${esc(id)}</a></td>` +
    `<td><span class="status ${esc(status)}">${esc(status)}</span>` +
    (resume ? `<div class="muted resume">${esc(best)}; resume: <code>${esc(resume)}</code></div>` : '') + '</td>' +
    `<td class=nowrap data-value="${esc(started)}" title="${esc(started)}">${esc(started.slice(0, 19).replace('T', ' '))}</td>` +
    `<td class=num data-value="${esc(epochs)}">${esc(epochs)}</td>`;
  if (e.job) html += `<td class="nowrap job">${esc(job)}</td>`;
  e.shown.forEach(j => { const v = metrics[j];
    html += v === null ? '<td data-value=""></td>' : `<td class=num data-value="${v}">${v.toFixed(4)}</td>`; });
  argv.forEach(v => { html += v === null ? '<td class=nowrap data-value=""></td>'
    : `<td class=nowrap data-value="${esc(Array.isArray(v) ? v[1] : v)}">${esc(shown(v))}</td>`; });
  return html;
}
function sortKey(e, row, col) {
  if (col === 'id') return row[1];
  if (col === 'status') return row[3];
  if (col === 'started') return row[4];
  if (col === 'epochs') return row[5] === '' ? null : +row[5];
  if (col === 'job') return row[8];
  const j = +col.slice(1);
  const v = col[0] === 'm' ? row[9][j] : row[10][j];
  if (v === null || typeof v === 'number') return v;
  if (Array.isArray(v)) return v[1];
  return v !== '' && !isNaN(+v) ? +v : v;
}
function text(e, row) {
  return [row[1], row[3], row[4], row[5], row[6], row[8], ...row[10].map(shown)].join(' ').toLowerCase();
}
function matches(view, row) {
  return view.terms.every(([name, value]) => {
    if (name === null) return text(view.e, row).includes(value);
    const a = view.e.args.indexOf(name);
    const v = a >= 0 ? shown(row[10][a]) : (view.e.common[name] ?? summary({e: view.e, row})[name]);
    return v !== undefined && v !== null && (String(v).toLowerCase() === value || (value !== '' && !isNaN(+value) && +v === +value));
  });
}
function order(view) {
  const rows = view.e.rows.map((row, k) => k).filter(k => matches(view, view.e.rows[k]));
  if (view.sort) {
    const [col, dir] = view.sort;
    const keys = view.e.rows.map(row => sortKey(view.e, row, col));
    rows.sort((a, b) => { const x = keys[a], y = keys[b];
      if (x === null || y === null) return x === y ? a - b : (x === null ? 1 : -1);
      const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
      return c * dir || a - b; });
  }
  view.order = rows;
  view.count.textContent = rows.length === view.e.rows.length ? '' : `${rows.length} of ${view.e.rows.length} shown`;
  view.box.scrollTop = 0;  // a new order starts at its top
  render(view);
}
function render(view) {
  const h = view.height || 30, n = view.order.length, box = view.box;
  const first = Math.max(0, Math.min(Math.floor(box.scrollTop / h), n - Math.ceil((box.clientHeight || 800) / h)) - 30);
  const last = Math.min(n, first + Math.ceil((box.clientHeight || 800) / h) + 60);
  let html = first > 0 ? `<tr class=pad style="height:${first * h}px"></tr>` : '';
  for (let k = first; k < last; k++) html += '<tr class=run>' + cells(view.e, view.e.rows[view.order[k]]) + '</tr>';
  if (last < n) html += `<tr class=pad style="height:${(n - last) * h}px"></tr>`;
  view.body.innerHTML = html;
  const one = view.body.querySelector('tr.run');
  if (!view.height && one && one.offsetHeight) { view.height = one.offsetHeight; if (n > last - first) render(view); }
}
document.querySelectorAll('table.runs').forEach((table, k) => {
  const view = {e: data.experiments[k], body: table.tBodies[0], box: table.closest('.rows'), terms: [], sort: null,
                count: table.closest('section').querySelector('.count')};
  views.push(view);
  table.querySelectorAll('th.sort').forEach(th => th.addEventListener('click', () => {
    const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir > 0 ? 'asc' : 'desc';
    view.sort = [th.dataset.col, dir]; order(view); }));
  let frame = 0;
  view.box.addEventListener('scroll', () => { if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(view); }); });
  table.closest('section').querySelector('input.filter').addEventListener('input', ev => {
    view.terms = ev.target.value.toLowerCase().split(/\s+/).filter(Boolean).map(t => {
      const at = t.indexOf('='); return at > 0 ? [t.slice(0, at).replace(/^--/, ''), t.slice(at + 1)] : [null, t]; });
    order(view); });
  order(view);
});
const curves = {}, loading = {};
window.expkitCurve = (folder, rows) => { curves[folder] = rows; };
function curve(run) {
  const folder = run.row[2];
  if (!loading[folder]) loading[folder] = new Promise(done => {
    const s = document.createElement('script');
    s.src = encodeURI(data.curves + '/' + folder + '.js');
    s.onload = () => done(); s.onerror = () => { curves[folder] = []; done(); };
    document.head.appendChild(s); });
  return loading[folder];
}
let generation = 0;
function compare() {
  const chosen = [...picked].sort((a, b) => a - b), out = document.getElementById('compare'), now = ++generation;
  if (chosen.length === 0) { out.innerHTML = '<p class=muted>tick runs above to compare them</p>'; window.comparing = Promise.resolve(); return; }
  window.comparing = Promise.all(chosen.map(i => curve(all[i]))).then(() => { if (now === generation) draw(chosen, out); });
}
function draw(chosen, out) {
  const sel = chosen.map(i => ({id: all[i].row[1], args: args(all[i]), summary: summary(all[i]),
                                monitor: all[i].e.monitor, history: curves[all[i].row[2]] || []}));
  const keys = [...new Set(sel.flatMap(r => Object.keys(r.args)))].filter(k =>
    new Set(sel.map(r => r.args[k])).size > 1);
  const metrics = [...new Set(sel.flatMap(r => Object.keys(r.summary)))].filter(k => /^(best_val|final_val|test_)/.test(k));
  let html = '<div class=scroll><table><tr><th>run</th>' + keys.map(k => `<th>${esc(k)}</th>`).join('') +
    metrics.map(k => `<th>${esc(k)}</th>`).join('') + '</tr>';
  for (const r of sel) html += `<tr><td class=nowrap>${esc(r.id)}</td>` +
    keys.map(k => `<td class=nowrap>${esc(k in r.args ? r.args[k] : '')}</td>`).join('') +
    metrics.map(k => `<td class=num>${k in r.summary ? r.summary[k].toFixed(4) : ''}</td>`).join('') + '</tr>';
  const names = [...new Set(sel.flatMap(r => r.history.flatMap(h => Object.keys(h))))].filter(k => k !== 'epoch' && k !== 'step' && !k.endsWith('_time'));
  const metric = names.includes(out.dataset.metric) ? out.dataset.metric : (names.includes(sel[0].monitor) ? sel[0].monitor : names[0]);
  html += '</table></div>' + (names.length ? '<p><label>metric <select id="chart-metric">' +
    names.map(n => `<option${n === metric ? ' selected' : ''}>${esc(n)}</option>`).join('') + '</select></label></p>' +
    `${hint}<div id="compare-chart"></div>` : '');
  out.innerHTML = html;
  if (names.length) chart(document.getElementById('compare-chart'), sel, metric, keys);
  const select = document.getElementById('chart-metric');
  if (select) select.addEventListener('change', () => { out.dataset.metric = select.value; draw(chosen, out); });
}
function chart(box, sel, metric, keys) {
  const xs = sel.every(r => r.history.some(h => 'step' in h)) ? ['step', 'epoch'] : ['epoch'];
  if (!sel.some(r => r.history.some(h => typeof h[metric] === 'number'))) {
    box.innerHTML = '<p class=muted>no evaluation has ' + esc(metric) + '</p>'; return; }
  expkitChart(box, {title: metric, ylabel: metric, xs, series: sel.map(r => ({key: metric, rows: r.history,
    label: r.id + (keys.some(k => k in r.args) ? '  ' + keys.filter(k => k in r.args).map(k => `${k}=${r.args[k]}`).join(', ') : '')}))});
}
document.addEventListener('change', ev => {  // capture: a tick is seen wherever its row is drawn
  if (!ev.target.matches || !ev.target.matches('input.pick')) return;
  const i = +ev.target.value; if (ev.target.checked) picked.add(i); else picked.delete(i);
  compare(); }, true);
compare();
"""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _experiment(group: list[tuple[int, Run]], results_dir: Path) -> tuple[str, dict[str, Any]]:
    """One experiment's table head (HTML) and its data: a compact row per run, the arguments
    that differ between its runs (by flag), those all its runs share, and its metrics."""
    from expkit.reports.compare import differing

    members = [run for _, run in group]
    summaries = [run.summary() for run in members]
    metrics = list(dict.fromkeys(k for s in summaries for k in s
                                 if k.startswith(("best_val", "final_val", "test_"))))
    shown = [j for j, k in enumerate(metrics) if k.startswith(("best_val", "test_"))]
    differ = differing(members)
    # what the runs trained with first, how they were recorded (trackers, checkpoints) last
    arg_keys = [k for k in differ if k.rsplit(".", 1)[-1] not in NOT_SETTINGS or k.endswith("seed")] \
        + [k for k in differ if k.rsplit(".", 1)[-1] in NOT_SETTINGS and not k.endswith("seed")]
    record = members[0].record
    rows = []
    for (i, run), summary in zip(group, summaries, strict=True):
        flat = run.flat_config
        epochs, best = run.progress
        status = run.status
        rows.append([i, run.id, run.path.relative_to(results_dir).as_posix(), status,
                     str(run.record.get("started") or ""), epochs, best,
                     command("resume", str(run.path)) if resumable(run.path, status) else "",
                     job_label(run.record), [summary.get(m) for m in metrics],
                     [None if k not in flat else [as_typed(flat[k]), flat[k]] if _number(flat[k])
                      else as_typed(flat[k], none="none") for k in arg_keys]])
    first = members[0].flat_config
    common = {flag_of(k, record): as_typed(v, none="none") for k, v in first.items()
              if k != "experiment_id" and k not in differ}
    monitors = [str(run.metrics.get("monitor") or "val_loss") for run in members]
    jobs = any(row[8] for row in rows)
    flags = [flag_of(k, record) for k in arg_keys]
    data = {"id": members[0].experiment_id, "metrics": metrics, "shown": shown, "args": flags, "common": common, "job": jobs,
            "monitor": max(set(monitors), key=monitors.count), "rows": rows}
    head = ('<tr><th></th>' + "".join(f'<th class="sort" data-col="{c}">{label}</th>' for c, label in
                                      [("id", "run"), ("status", "status"), ("started", "started"),
                                       ("epochs", "epochs run")])
            + ('<th class="sort" data-col="job">SLURM job</th>' if jobs else "")
            + "".join(f'<th class="sort" data-col="m{j}">{escape(metrics[j])}</th>' for j in shown)
            + "".join(f'<th class="sort arg" data-col="a{j}">{escape(flag)}</th>'
                      for j, flag in enumerate(flags)) + "</tr>")
    return head, data


def _section(head: str, data: dict[str, Any], members: list[Run]) -> str:
    datasets = sorted({str(run.get("dataset.name")) for run in members
                       if run.get("dataset.name") is not None})
    n = len(members)
    about = f"{n} run{'s' if n > 1 else ''}" + (
        f" · dataset <b class=dataset>{escape(datasets[0])}</b>" if len(datasets) == 1 else "")
    experiment = escape(data["id"])
    return (f'<section><h2 class=experiment>{experiment}</h2><p class=muted>{about} · <input class=filter '
            f'type=search placeholder="filter: finished lr=0.01" aria-label="filter the runs of '
            f'{experiment}"> <span class=count></span></p>'
            f'<div class="scroll rows"><table class="runs" data-experiment="{experiment}">'
            f"<thead>{head}</thead><tbody></tbody></table></div>"
            + _settings_table(members) + "</section>")


def _settings_table(experiment_runs: list[Run]) -> str:
    """The experiment's settings over their seeds (when one has two runs or more): N and each
    metric's mean ± std, the 95% interval on hover, the best in bold."""
    from expkit.reports.tables import footnote, group_table, summary_metrics
    from expkit.rundir.groups import group_runs

    settings = group_runs(experiment_runs)
    if not any(len(g.runs) > 1 for g in settings):
        return ""
    table = group_table(settings, summary_metrics(experiment_runs), "html")
    return (f"<h3>Settings over seeds</h3><div class=scroll>{table}</div>"
            f"<p class=muted>{escape(footnote('html'))}</p>")


def index_html(all_runs: list[Run], results_dir: Path) -> str:
    """results/index.html: a table per experiment of its runs with the arguments that differ
    between them and their metrics (sortable by any column, filtered by `flag=value` or any
    text), links to reports, the settings over seeds, and a comparison of ticked runs
    (differing arguments, metrics, a chart of any metric)."""
    groups: dict[str, list[tuple[int, Run]]] = {}
    for i, run in enumerate(all_runs):
        groups.setdefault(run.experiment_id, []).append((i, run))
    parts, experiments = [], []
    for group in groups.values():
        head, data = _experiment(group, results_dir)
        parts.append(_section(head, data, [run for _, run in group]))
        experiments.append(data)
    payload = _script_json({"curves": CURVES, "experiments": experiments})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline' 'self' file:">
<title>expkit runs · {escape(str(results_dir))}</title><style>{_CSS}{_INDEX_CSS}</style>{chart_assets()}</head><body>
<h1>Runs in {escape(str(results_dir))}</h1>
<p class=muted>{len(all_runs)} runs of {len(groups)} experiment{'s' if len(groups) != 1 else ''}.
Each table shows the arguments that differ between its runs, then their metrics. Click a column
to sort, type in the box to filter (<code>flag=value</code> or any text); tick runs to compare
them below.</p>
{"".join(parts) or '<p class=muted>no runs yet</p>'}
<h2>Comparison</h2><div id="compare"></div>
<template id="chart-hint">{HINT}</template>
<script type="application/json" id="runs-data">{payload}</script>
<script>{_INDEX_JS}</script>
</body></html>
"""


def write_curves(all_runs: list[Run], results_dir: Path) -> None:
    """RESULTS/.expkit/curves/<experiment>/<run>.js for each run whose history.csv changed since
    its curve was written (and none for runs that are gone): what the index loads on a tick."""
    root = results_dir / CURVES
    wanted: dict[str, Run] = {}
    for run in all_runs:
        key = run.path.relative_to(results_dir).as_posix()
        path = f"{root}/{key}.js"
        wanted[path] = run
        try:
            written = os.stat(path).st_mtime_ns
            if written > os.stat(f"{run.path}/history.csv").st_mtime_ns + RACY_NS:
                continue  # written after the history's last change
        except OSError:
            pass  # no curve yet, or no history: (re)write it
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        replace_text(Path(path), f"expkitCurve({_script_json(key)}, {_script_json(run.history)});\n")
    if root.is_dir():
        for folder in [p for p in root.iterdir() if p.is_dir()]:
            for entry in os.scandir(folder):
                if entry.path not in wanted:
                    os.remove(entry.path)
            if not any(folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)


def write_index(results_dir: Path) -> Path:
    """Write results/index.html, the curves it loads, and report.html for any run that has none
    yet."""
    from expkit.rundir.jobqueue import one_queue_snapshot

    folder = Path(results_dir).absolute()
    with one_queue_snapshot():  # SLURM runs' statuses: one squeue call for the page
        all_runs = list(runs(folder))
        for run in all_runs:
            if not os.path.isfile(f"{run.path}/{REPORT}"):
                write_report(run.path)
        write_curves(all_runs, folder)
        path = folder / INDEX
        atomic_write_text(path, index_html(all_runs, folder))
    return path
