"""report.html for a run, and results/index.html for all runs: one self-contained file each.

Plots are embedded as data: URIs, styles and the few lines of script are inline; the pages
load nothing from the network and need no server: open them from the results folder.
"""

from __future__ import annotations

import base64
import json
import shlex
from html import escape
from pathlib import Path
from typing import Any

from expkit.files import atomic_write_text
from expkit.invocation import pinned
from expkit.results import Run, as_typed, flatten, read_run, runs

REPORT = "report.html"
INDEX = "index.html"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#1d2330;padding:0 1em}h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;
border-bottom:1px solid #dde;padding-bottom:.2em}table{border-collapse:collapse;margin:.4em 0}
td,th{padding:.25em .7em;border-bottom:1px solid #eef;text-align:left;vertical-align:top}
th{background:#f5f6fa;cursor:default}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{background:#f5f6fa;padding:.1em .3em;border-radius:3px;font-size:.92em}pre{padding:.6em;overflow:auto}
.status{display:inline-block;padding:.1em .6em;border-radius:1em;color:#fff;font-weight:600}
.finished{background:#2a8a4a}.failed{background:#c0392b}.stopped{background:#b07b12}.running{background:#2c6db0}
.muted{color:#667}img{max-width:100%;border:1px solid #eef}th.sort{cursor:pointer}th.sort:after{content:" \\2195";color:#99a}
"""


def _png_uri(path: Path) -> str | None:
    try:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    except OSError:
        return None


def _fmt(value: Any, none: str = "auto") -> str:
    if isinstance(value, bool):
        return as_typed(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return none if value is None else str(value)


def _table(rows: list[tuple[str, Any]], key_id: str = "", none: str = "") -> str:
    cells = []
    for key, value in rows:
        attrs = (f' id="{key_id}{escape(key)}" data-value="{escape(json.dumps(value))}"'
                 if key_id else "")
        num = ' class="num"' if isinstance(value, (int, float)) else ""
        cells.append(f"<tr><th>{escape(key)}</th><td{num}{attrs}>{escape(_fmt(value, none))}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def reproduce_command(run: Run) -> str:
    """The command line that makes the run again, for copy and paste: argv as recorded with
    what was drawn or chosen by the machine written out (the seed, the device)."""
    if run.record.get("command"):
        return str(run.record["command"])
    argv = [str(a) for a in run.record.get("argv") or []]  # a run recorded before `command`
    seed = (run.record.get("seed") or {}).get("value")
    return "python run.py " + " ".join(
        shlex.quote(a) for a in (pinned(argv, {"seed": str(seed)}) if seed is not None else argv))


def _as_used(key: str, value: Any, record: dict[str, Any]) -> str:
    """A config value as the run used it: `auto` resolved (the device), none/off said plainly."""
    if key == "use_cuda" and value is None and record.get("device"):
        return f"{'true' if str(record['device']).startswith('cuda') else 'false'} (auto)"
    return as_typed(value, none="none")


def report_html(run: Run) -> str:
    """The report page of one run (status, metrics, plots, config with sources, record, command)."""
    m, rec = run.metrics, run.record
    title = f"{run.experiment_id} · {run.id}"
    key_metrics: list[tuple[str, Any]] = []
    if m:
        key_metrics += [("monitor", f"{m.get('monitor')} ({m.get('mode')})"),
                        ("best epoch", m.get("best_epoch")), ("epochs run", m.get("epochs_run")),
                        ("stop reason", m.get("stop_reason")), ("weights tested", m.get("weights")),
                        ("train seconds", m.get("train_seconds"))]
    summary = sorted(run.summary().items())
    plots = "".join(f'<p><img alt="{escape(name)}" src="{uri}"></p>'
                    for name in ("history.png",) if (uri := _png_uri(run.path / name)))
    sources = rec.get("sources") or {}
    config_rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(_as_used(k, v, rec))}</td><td class=muted>"
        f"{escape(sources.get(k, 'default'))}</td></tr>" for k, v in flatten(run.config).items())
    code, env, seed = rec.get("code") or {}, rec.get("environment") or {}, rec.get("seed") or {}
    record_rows: list[tuple[str, Any]] = [
        ("commit", code.get("commit")), ("branch", code.get("branch")), ("dirty", code.get("dirty")),
        ("untracked files", len(code.get("untracked") or [])), ("seed", seed.get("value")),
        ("seed generated", seed.get("generated")), ("python", env.get("python")),
        ("torch", env.get("torch")), ("numpy", env.get("numpy")), ("cuda", env.get("cuda")),
        ("host", env.get("host")), ("os", env.get("os")), ("cpu", env.get("cpu")),
        ("started", rec.get("started")), ("ended", rec.get("ended"))]
    if rec.get("distributed"):
        record_rows.append(("world size", rec["distributed"].get("world_size")))
    if rec.get("sweep"):
        record_rows.append(("sweep", f"{rec['sweep'].get('name')} trial {rec['sweep'].get('trial')}"))
    files = "".join(f"<tr><td><code>{escape(Path(f).name)}</code></td><td><code>{escape(h)}</code></td></tr>"
                    for f, h in ((rec.get("data") or {}).get("files") or {}).items())
    error = (f"<h2>Error</h2><pre>{escape(str(rec.get('error')))}</pre>" if rec.get("error") else "")
    status = escape(run.status)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{escape(title)}</h1>
<p><span class="status {status}" id="status">{status}</span>
<span class=muted>{escape(str(run.path))}</span></p>
<h2>Metrics</h2>
<div style="display:flex;gap:2em;flex-wrap:wrap">{_table(summary, "metric-")}{_table(key_metrics)}</div>
<h2>History</h2>
{plots or '<p class=muted>no history.png (no epoch finished)</p>'}
{error}
<h2>Reproduce</h2>
<pre id="command">{escape(reproduce_command(run))}</pre>
<p>or, into a new run directory, comparing the metrics: <code>expkit reproduce {escape(str(run.path))}</code></p>
<h2>Config</h2>
<table><tr><th>argument</th><th>value</th><th>source</th></tr>{config_rows}</table>
<h2>Record</h2>
{_table(record_rows, none="none")}
{'<h3>Data files (SHA-256)</h3><table>' + files + '</table>' if files else ''}
<p class=muted>Full record: run.json, requirements.txt{', code.diff' if code.get('dirty') else ''} in the run directory.</p>
</body></html>
"""


def write_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report.html (atomically); returns its path."""
    run = read_run(run_dir)
    path = run.path / REPORT
    atomic_write_text(path, report_html(run))
    return path


_INDEX_JS = r"""
const runs = JSON.parse(document.getElementById('runs-data').textContent);
const esc = v => String(v).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'})[c]);
document.querySelectorAll('th.sort').forEach((th, col) => th.addEventListener('click', () => {
  const body = document.querySelector('#runs tbody');
  const rows = [...body.rows];
  const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir > 0 ? 'asc' : 'desc';
  const key = r => { const c = r.cells[th.cellIndex]; const v = c.dataset.value;
    return v !== undefined && v !== '' && !isNaN(+v) ? +v : c.textContent; };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    return (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y))) * dir; });
  rows.forEach(r => body.appendChild(r));
}));
function compare() {
  const picked = [...document.querySelectorAll('input.pick:checked')].map(c => runs[+c.value]);
  const out = document.getElementById('compare');
  if (picked.length === 0) { out.innerHTML = '<p class=muted>tick runs above to compare them</p>'; return; }
  const keys = Object.keys(picked[0].config).filter(k =>
    new Set(picked.map(r => JSON.stringify(r.config[k]))).size > 1);
  const metrics = [...new Set(picked.flatMap(r => Object.keys(r.summary)))];
  let html = '<table><tr><th>run</th>' + keys.map(k => `<th>${esc(k)}</th>`).join('') +
    metrics.map(k => `<th>${esc(k)}</th>`).join('') + '</tr>';
  for (const r of picked) html += `<tr><td>${esc(r.id)}</td>` +
    keys.map(k => `<td>${esc(JSON.stringify(r.config[k]))}</td>`).join('') +
    metrics.map(k => `<td class=num>${k in r.summary ? r.summary[k].toFixed(4) : ''}</td>`).join('') + '</tr>';
  html += '</table>' + chart(picked);
  out.innerHTML = html;
}
function chart(picked) {
  const monitor = picked[0].monitor, W = 640, H = 300, P = 40;
  const series = picked.map(r => r.history.filter(h => monitor in h).map(h => [h.epoch, h[monitor]]));
  const pts = series.flat(); if (!pts.length) return '';
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const sx = x => P + (x - x0) / (x1 - x0) * (W - 2 * P), sy = y => H - P - (y - y0) / (y1 - y0) * (H - 2 * P);
  const colours = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
  let svg = `<svg id="compare-chart" width="${W}" height="${H}" role="img"><text x="${P}" y="16">${esc(monitor)} per epoch</text>` +
    `<text x="4" y="${sy(y1) + 4}">${y1.toFixed(3)}</text><text x="4" y="${sy(y0)}">${y0.toFixed(3)}</text>` +
    `<line x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}" stroke="#999"/>`;
  series.forEach((s, i) => { svg += `<polyline fill="none" stroke-width="2" stroke="${colours[i % 8]}" points="` +
    s.map(p => sx(p[0]) + ',' + sy(p[1])).join(' ') + '"/>' +
    `<text x="${W - P - 180}" y="${30 + 16 * i}" fill="${colours[i % 8]}">${esc(picked[i].id)}</text>`; });
  return svg + '</svg>';
}
document.querySelectorAll('input.pick').forEach(c => c.addEventListener('change', compare));
compare();
"""


def index_html(all_runs: list[Run], results_dir: Path) -> str:
    """results/index.html: every run (sortable by any column), links to reports, a comparison."""
    summaries = [r.summary() for r in all_runs]
    metric_cols = list(dict.fromkeys(k for s in summaries for k in s
                                     if k.startswith(("best_val", "test_"))))
    head = ("<tr><th></th>" + "".join(f'<th class="sort">{escape(c)}</th>' for c in
            ["experiment", "dataset", "run", "status", "started", "epochs", *metric_cols]) + "</tr>")
    body = []
    for i, (run, summary) in enumerate(zip(all_runs, summaries, strict=True)):
        link = escape(str(run.path.relative_to(results_dir) / REPORT))
        cells = [f'<td><input type="checkbox" class="pick" value="{i}"></td>',
                 f"<td>{escape(run.experiment_id)}</td>",
                 f"<td>{escape(str(run.get('dataset.name') or ''))}</td>",
                 f'<td><a href="{link}">{escape(run.id)}</a></td>',
                 f'<td><span class="status {escape(run.status)}">{escape(run.status)}</span></td>',
                 f"<td>{escape(str(run.record.get('started') or ''))}</td>",
                 f'<td class=num data-value="{run.metrics.get("epochs_run", "")}">'
                 f'{escape(str(run.metrics.get("epochs_run", "")))}</td>']
        cells += [f'<td class=num data-value="{summary[c]}">{summary[c]:.4f}</td>' if c in summary
                  else '<td data-value=""></td>' for c in metric_cols]
        body.append("<tr>" + "".join(cells) + "</tr>")
    data = [{"id": r.id, "config": flatten(r.config), "summary": s,
             "monitor": r.metrics.get("monitor") or "val_loss",
             "history": r.history} for r, s in zip(all_runs, summaries, strict=True)]
    payload = json.dumps(data).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>expkit runs · {escape(str(results_dir))}</title><style>{_CSS}</style></head><body>
<h1>Runs in {escape(str(results_dir))}</h1>
<p class=muted>{len(all_runs)} runs. Click a column to sort; tick runs to compare them below.</p>
<table id="runs"><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>
<h2>Comparison</h2><div id="compare"></div>
<script type="application/json" id="runs-data">{payload}</script>
<script>{_INDEX_JS}</script>
</body></html>
"""


def write_index(results_dir: Path) -> Path:
    """Write results/index.html, and report.html for any run that has none yet."""
    folder = Path(results_dir).absolute()
    all_runs = list(runs(folder))
    for run in all_runs:
        if not (run.path / REPORT).is_file():
            write_report(run.path)
    path = folder / INDEX
    atomic_write_text(path, index_html(all_runs, folder))
    return path
