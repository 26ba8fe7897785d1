"""Interactive charts for report.html and index.html: uPlot (vendored, see vendor/uplot/README.md)
embedded into the page with a few lines of our own that draw history rows.

Every chart: drag to zoom (double-click to zoom out), hover for the values at that x, click a
legend entry to hide or show its series, a log-scale switch (when every value is positive)
and x as epoch or step (step-based runs). The pages stay one file each: nothing is loaded, so
their Content-Security-Policy can forbid every load.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

UPLOT = Path(__file__).parent / "vendor" / "uplot"

#: our part: `expkitChart(box, spec)` draws into `box`; spec = {title, ylabel, xs: names of the
#: possible x columns, series: [{label, colour, dash, rows: [history rows], key}]}
_GLUE = r"""
const expkitCharts = {};
const palette = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const fmtNum = v => v == null ? '' : (v !== 0 && (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3)) ? v.toExponential(4) : String(+v.toPrecision(6));
function expkitChart(box, spec) {
  const state = {x: spec.xs[0], log: false};
  box.classList.add('chart');
  box.innerHTML = '';
  const controls = document.createElement('div');
  controls.className = 'chart-controls';
  const positive = spec.series.every(s => s.rows.every(r => typeof r[s.key] !== 'number' || r[s.key] > 0));
  controls.innerHTML = (spec.xs.length > 1 ? '<label>x <select class="xaxis">' +
      spec.xs.map(x => `<option>${x}</option>`).join('') + '</select></label> ' : '') +
    `<label${positive ? '' : ' title="some values are not positive"'}><input type="checkbox" class="logscale"${positive ? '' : ' disabled'}> log scale</label>`;
  const plot = document.createElement('div');
  box.append(controls, plot);
  const width = () => Math.max(300, Math.min(box.clientWidth || 720, 960));
  new ResizeObserver(() => { const u = expkitCharts[box.id];  // follows the window's width
    if (u && u.width !== width()) u.setSize({width: width(), height: 300}); }).observe(box);
  function draw() {
    if (expkitCharts[box.id]) expkitCharts[box.id].destroy();
    const tables = spec.series.map(s => {
      const pts = s.rows.filter(r => typeof r[s.key] === 'number' && typeof r[state.x] === 'number')
        .map(r => [r[state.x], r[s.key]]).sort((a, b) => a[0] - b[0]);
      return [pts.map(p => p[0]), pts.map(p => p[1])];
    });
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    const opts = {
      width: width(), height: 300, title: spec.title,
      scales: {x: {time: false}, y: state.log ? {distr: 3} : {}},
      axes: [{label: state.x, incrs: data[0].every(Number.isInteger) ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6] : undefined},
        {label: spec.ylabel, size: 64, values: (u, ticks) => ticks.map(v => v == null ? '' : String(+v.toPrecision(6)))}],
      series: [{label: state.x, value: (u, v) => fmtNum(v)},
        ...spec.series.map((s, i) => ({label: s.label, stroke: s.colour || palette[i % palette.length],
          width: 2, dash: s.dash ? [6, 4] : undefined, spanGaps: true, points: {show: true, size: 5},
          value: (u, v) => fmtNum(v)}))],
      cursor: {drag: {x: true, y: false}},
    };
    expkitCharts[box.id] = new uPlot(opts, data, plot);
  }
  const xs = controls.querySelector('.xaxis'), log = controls.querySelector('.logscale');
  if (xs) xs.addEventListener('change', () => { state.x = xs.value; draw(); });
  log.addEventListener('change', () => { state.log = log.checked; draw(); });
  draw();
  return expkitCharts[box.id];
}
"""

#: said once above a page's charts
HINT = ('<p class="muted chart-hint">Charts: drag across one to zoom in, double-click to zoom out, '
        "hover for values, click a legend entry to hide or show its series.</p>")

_CSS = """
#charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:0 2em}#charts>div{min-width:0}.chart{margin:.6em 0 1.2em}.chart-controls{margin:.2em 0 .4em;font-size:.92em}.chart-controls label{margin-right:.8em}
.u-legend{font-size:13px}.u-legend th{font-weight:normal;background:none}.u-legend td,.u-legend th{border:0;padding:.1em .4em}
"""


@cache
def chart_assets() -> str:
    """The <style> and <script> a page needs for `expkitChart` (uPlot's own and ours, inline)."""
    script = (UPLOT / "uPlot.iife.min.js").read_text(encoding="utf-8")
    style = (UPLOT / "uPlot.min.css").read_text(encoding="utf-8")
    return f"<style>{style}{_CSS}</style>\n<script>{script}\n{_GLUE}</script>"


def metric_groups(columns: list[str]) -> dict[str, list[str]]:
    """History columns grouped for one chart each: train_X and val_X share the chart X (in
    that order), grad_norm and grad_norm/<module> the chart grad_norm, anything else (lr, ...)
    has its own; the x columns and timings have none."""
    groups: dict[str, list[str]] = {}
    for column in columns:
        if column in ("epoch", "step") or column.endswith("_time"):
            continue
        base = column.split("_", 1)[1] if column.startswith(("train_", "val_")) else column
        base = base.split("/", 1)[0]  # a metric's parts (grad_norm/<module>) share its chart
        groups.setdefault(base, []).append(column)
    return groups
