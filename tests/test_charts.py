"""The interactive charts of report.html and index.html (uPlot, vendored) in headless Chromium:
each series has the points of history.csv, a hover shows history.csv's values, a legend click
hides a series, drag zooms, log scale and x = step switch, and nothing leaves the page."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from browser import Browser, assert_policy_blocks_loads
from conftest import REPO, Workspace
from expkit.rundir.results import read_history

VENDOR = REPO / "src" / "expkit" / "reports" / "vendor" / "uplot"


def test_vendored_uplot_is_the_pinned_release_with_its_licence() -> None:
    table = (VENDOR / "README.md").read_text()
    assert "uPlot 1.6.32" in table and "uplot@1.6.32" in table
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE"):
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        assert re.search(rf"\| {re.escape(name)} \|[^|]*\| {digest} \|", table), name
    assert "(v1.6.32)" in (VENDOR / "uPlot.iife.min.js").read_text()[:100]
    assert "MIT License" in (VENDOR / "LICENSE").read_text()


@pytest.fixture(scope="module")
def step_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    """A finished step-based run: evaluations at steps 4, 8 and 10 (fractions of passes)."""
    from conftest import _clean_env, write_idx_set

    tmp = tmp_path_factory.mktemp("charts")
    ws = Workspace(tmp / "ws", _clean_env(tmp))
    ws.root.mkdir()
    write_idx_set(ws.cache / "mnist")
    result = ws.run("--experiment_id=mnist", "--max_steps=10", "--eval_every=4", "--seed=0",
                    "--max_train_samples=300", "--batch_size=64")
    assert result.returncode == 0, result.stderr
    return ws, ws.last_run()


def chart(browser: Browser, name: str) -> dict[str, Any]:
    """What a chart holds and where it is drawn (viewport pixels)."""
    result: dict[str, Any] = browser.evaluate(f"""(() => {{
      const u = expkitCharts['{name}']; u.root.scrollIntoView({{block: 'center'}});
      const r = u.over.getBoundingClientRect();
      return {{labels: u.series.map(s => s.label), show: u.series.map(s => s.show),
              data: u.data.map(d => [...d]), box: [r.left, r.top, r.width, r.height],
              x: [u.scales.x.min, u.scales.x.max], distr: u.scales.y.distr, idx: u.cursor.idx,
              legend: [...u.root.querySelectorAll('.u-legend .u-series')].map(tr =>
                [tr.classList.contains('u-off'), tr.querySelector('.u-value').textContent])}}; }})()""")
    return result


def coloured_pixels(browser: Browser, name: str, series: int) -> int:
    """How many pixels of the chart's canvas are (nearly) the series' stroke colour."""
    return int(browser.evaluate(f"""(() => {{
      const u = expkitCharts['{name}'], c = u.ctx.canvas;
      const hex = u.series[{series}].stroke(), want = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
      const px = u.ctx.getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 0; i < px.length; i += 4)
        if (px[i + 3] > 200 && Math.abs(px[i] - want[0]) + Math.abs(px[i + 1] - want[1])
            + Math.abs(px[i + 2] - want[2]) < 40) n++;
      return n; }})()"""))


@pytest.mark.slow
def test_report_charts_hover_toggle_zoom_and_switch(step_run: tuple[Workspace, Path],
                                                    browser: Browser) -> None:
    _, run_dir = step_run
    history = read_history(run_dir)
    assert [row["step"] for row in history] == [4, 8, 10]
    url = (run_dir / "report.html").absolute().as_uri()
    requests = browser.open(url)
    assert all(r == url or r.startswith("data:") for r in requests), requests
    names = browser.evaluate("Object.keys(expkitCharts)")
    assert names == ["chart-loss", "chart-acc", "chart-grad_norm", "chart-samples_per_second", "chart-lr"]

    # each series renders with the points of history.csv, x = step
    loss = chart(browser, "chart-loss")
    assert loss["labels"] == ["step", "train_loss", "val_loss"]
    assert loss["data"] == [[row["step"] for row in history], [row["train_loss"] for row in history],
                            [row["val_loss"] for row in history]]
    assert coloured_pixels(browser, "chart-loss", 1) > 50 and coloured_pixels(browser, "chart-loss", 2) > 50

    # a hover over the second evaluation shows its values from history.csv
    left, top, width, height = loss["box"]
    x = left + width * (8 - loss["x"][0]) / (loss["x"][1] - loss["x"][0])
    browser.mouse("moved", x, top + height / 2)
    hovered = chart(browser, "chart-loss")
    assert hovered["idx"] == 1
    shown = [float(value) for _, value in hovered["legend"]]
    assert shown == pytest.approx([8, history[1]["train_loss"], history[1]["val_loss"]], rel=1e-5)
    browser.mouse("moved", 5, 5)  # away: the cursor's marks leave the canvas

    # a click on a legend entry hides its series (no pixel of its colour is left)
    centre = browser.evaluate("""(() => { const r = expkitCharts['chart-loss'].root
      .querySelectorAll('.u-legend .u-series')[1].getBoundingClientRect();
      return [r.left + r.width / 2, r.top + r.height / 2]; })()""")
    browser.mouse("pressed", *centre)
    browser.mouse("released", *centre)
    toggled = chart(browser, "chart-loss")
    assert toggled["show"] == [True, False, True] and toggled["legend"][1][0] is True
    assert coloured_pixels(browser, "chart-loss", 1) == 0 and coloured_pixels(browser, "chart-loss", 2) > 50

    # drag across the middle of the plot zooms x in; a double-click zooms back out
    browser.mouse("pressed", left + width * 0.3, top + height / 2)
    browser.mouse("moved", left + width * 0.7, top + height / 2)
    browser.mouse("released", left + width * 0.7, top + height / 2)
    lo, hi = chart(browser, "chart-loss")["x"]
    span = loss["x"][1] - loss["x"][0]
    assert lo == pytest.approx(loss["x"][0] + 0.3 * span, abs=span * 0.02)
    assert hi == pytest.approx(loss["x"][0] + 0.7 * span, abs=span * 0.02)
    browser.mouse("pressed", left + width / 2, top + height / 2, clicks=2)
    browser.mouse("released", left + width / 2, top + height / 2, clicks=2)
    assert chart(browser, "chart-loss")["x"] == loss["x"]

    # log scale, and x as the epoch (passes so far, a fraction)
    browser.evaluate("const b = document.querySelector('#chart-loss .logscale'); b.click()")
    assert chart(browser, "chart-loss")["distr"] == 3
    browser.evaluate("const s = document.querySelector('#chart-loss .xaxis'); s.value = 'epoch'; "
                     "s.dispatchEvent(new Event('change'))")
    switched = chart(browser, "chart-loss")
    assert switched["labels"][0] == "epoch" and switched["distr"] == 3
    assert switched["data"][0] == [row["epoch"] for row in history]
    assert switched["data"][0][0] == pytest.approx(4 / 5)  # 300 samples: 5 batches a pass

    assert browser.errors() == []
    assert all(r == url or r.startswith("data:") for r in browser.requests()), "no request left"
    assert_policy_blocks_loads(browser)


def test_diverged_history_still_draws(tmp_path: Path) -> None:
    """A NaN loss (a diverged run) must not break the page's data (JSON has no NaN)."""
    from expkit.reports.report import _script_json

    assert _script_json([{"train_loss": float("nan"), "x": float("inf"), "s": "</script>"}]) == \
        '[{"train_loss":null,"x":null,"s":"<\\/script>"}]'
