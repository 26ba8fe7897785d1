"""report.html for a run: one self-contained file (results/index.html: `expkit.reports.index`).

Plots are embedded as data: URIs, styles and the few lines of script are inline; the pages
load nothing from the network and need no server: open them from the results folder.
"""

from __future__ import annotations

import base64
import json
import math
import shlex
from html import escape
from pathlib import Path
from typing import Any

from expkit.reports.charts import HINT, chart_assets, metric_groups
from expkit.rundir.dirs import job_label
from expkit.rundir.results import Run, read_artifacts, read_run
from expkit.rundir.values import as_typed, flatten
from expkit.utils.files import atomic_write_text
from expkit.utils.invocation import pinned

REPORT = "report.html"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#1d2330;padding:0 1em}h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;
border-bottom:1px solid #dde;padding-bottom:.2em}table{border-collapse:collapse;margin:.4em 0}
td,th{padding:.25em .7em;border-bottom:1px solid #eef;text-align:left;vertical-align:top}
th{background:#f5f6fa;cursor:default}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{background:#f5f6fa;padding:.1em .3em;border-radius:3px;font-size:.92em}pre{padding:.6em;overflow:auto}
.status{display:inline-block;padding:.1em .6em;border-radius:1em;color:#fff;font-weight:600}
.finished{background:#2a8a4a}.killed{background:#6d4c9f}.failed{background:#c0392b}.stopped{background:#b07b12}.running{background:#2c6db0}.queued,.requeued{background:#5b6b7d}
.muted{color:#667}img{max-width:100%;border:1px solid #eef}th.sort{cursor:pointer}th.sort:after{content:" \\2195";color:#99a}
"""


def _script_json(value: Any) -> str:
    """`value` as JSON to put inside a <script> block: NaN and infinities (a diverged run's
    losses) as null, which JSON has, and no "</" that would end the block."""
    def finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, list):
            return [finite(x) for x in v]
        return v
    try:  # the common case, in one pass of the C encoder
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(finite(value), separators=(",", ":"))
    return text.replace("</", "<\\/")


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


def _artifacts_html(run_dir: Path, last: int = 3) -> str:
    """The Artifacts section: each artifact's last few evaluations, newest first (text
    preformatted and escaped, images inline as data URIs)."""
    parts = []
    for name, files in read_artifacts(run_dir).items():
        shown = []
        for path in reversed(files[-last:]):
            if path.suffix == ".txt":
                body = f"<pre>{escape(path.read_text(encoding='utf-8', errors='replace'))}</pre>"
            else:
                uri = _png_uri(path)
                body = f'<img alt="{escape(name)} {path.stem}" src="{uri}">' if uri else ""
            shown.append(f'<div class=artifact data-name="{escape(name)}" data-epoch="{path.stem}">'
                         f"<p class=muted>epoch {path.stem}</p>{body}</div>")
        parts.append(f"<h3>{escape(name)}</h3>" + "".join(shown))
    return "<h2>Artifacts</h2>" + "".join(parts) if parts else ""


def report_html(run: Run) -> str:
    """The report page of one run (status, metrics, plots, config with sources, record, command)."""
    rec = run.record
    title = f"{run.experiment_id} · {run.id}"
    key_metrics = _key_metrics(run.metrics)
    summary = sorted(run.summary().items())
    plots = "".join(f'<p><img alt="{escape(name)}" src="{uri}"></p>'
                    for name in ("history.png",) if (uri := _png_uri(run.path / name)))
    sources = rec.get("sources") or {}
    config_rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(_as_used(k, v, rec))}</td><td class=muted>"
        f"{escape(sources.get(k, 'default'))}</td></tr>" for k, v in flatten(run.config).items())
    code = rec.get("code") or {}
    record_rows = _record_rows(rec)
    files = "".join(f"<tr><td><code>{escape(Path(f).name)}</code></td><td><code>{escape(h)}</code></td></tr>"
                    for f, h in ((rec.get("data") or {}).get("files") or {}).items())
    error = (f"<h2>Error</h2><pre>{escape(str(rec.get('error')))}</pre>" if rec.get("error") else "")
    status = escape(run.status)
    artifacts = _artifacts_html(run.path)
    history = run.history
    groups = metric_groups(list(history[0])) if history else {}
    charts = "".join(f'<div id="chart-{escape(base)}"></div>' for base in groups)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{escape(title)}</title><style>{_CSS}</style>{chart_assets() if groups else ""}</head><body>
<h1>{escape(title)}</h1>
<p><span class="status {status}" id="status">{status}</span>
<span class=muted>{escape(str(run.path))}</span></p>
<h2>Metrics</h2>
<div style="display:flex;gap:2em;flex-wrap:wrap">{_table(summary, "metric-")}{_table(key_metrics)}</div>
<h2>History</h2>
{plots or '<p class=muted>no history.png (no epoch finished)</p>'}
{HINT if groups else ""}<div id="charts">{charts}</div>
{_history_script(history, groups) if groups else ""}
{artifacts}
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


def _key_metrics(m: dict[str, Any]) -> list[tuple[str, Any]]:
    """The run's monitor, best and last evaluation, why it stopped, the weights tested."""
    if not m:
        return []
    return [("monitor", f"{m.get('monitor')} ({m.get('mode')})"),
            *((("best step", m["best_step"]), ("steps run", m.get("steps_run")))
              if "steps_run" in m else
              (("best epoch", m.get("best_epoch")), ("epochs run", m.get("epochs_run")))),
            ("stop reason", m.get("stop_reason")), ("weights tested", m.get("weights")),
            ("train seconds", m.get("train_seconds"))]


def _record_rows(rec: dict[str, Any]) -> list[tuple[str, Any]]:
    """What run.json says of the code, the seed, the environment, the time, and where it ran."""
    code, env, seed = rec.get("code") or {}, rec.get("environment") or {}, rec.get("seed") or {}
    rows: list[tuple[str, Any]] = [
        ("commit", code.get("commit")), ("branch", code.get("branch")), ("dirty", code.get("dirty")),
        ("untracked files", len(code.get("untracked") or [])), ("seed", seed.get("value")),
        ("seed generated", seed.get("generated")), ("python", env.get("python")),
        ("torch", env.get("torch")), ("numpy", env.get("numpy")), ("cuda", env.get("cuda")),
        ("host", env.get("host")), ("os", env.get("os")), ("cpu", env.get("cpu")),
        ("started", rec.get("started")), ("ended", rec.get("ended"))]
    if rec.get("distributed"):
        rows.append(("world size", rec["distributed"].get("world_size")))
    if rec.get("slurm"):
        rows.append(("SLURM job", job_label(rec)))
    if rec.get("sweep"):
        rows.append(("sweep", f"{rec['sweep'].get('name')} trial {rec['sweep'].get('trial')}"))
    return rows


def _history_script(history: list[dict[str, float]], groups: dict[str, list[str]]) -> str:
    """The report's chart per metric group: train dashed, val solid, x epoch (or step)."""
    xs = ["step", "epoch"] if "step" in history[0] else ["epoch"]
    return f"""<script type="application/json" id="history-data">{_script_json(history)}</script>
<script>
const rows = JSON.parse(document.getElementById('history-data').textContent);
for (const [base, columns] of Object.entries({_script_json(groups)}))
  expkitChart(document.getElementById('chart-' + base), {{title: base, ylabel: base, xs: {_script_json(xs)},
    series: columns.map(c => ({{label: c, key: c, rows, dash: c.startsWith('train_')}}))}});
</script>"""


def write_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report.html (atomically); returns its path."""
    run = read_run(run_dir)
    path = run.path / REPORT
    atomic_write_text(path, report_html(run))
    return path
