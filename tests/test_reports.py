"""Seeing runs: compare (table + compare.png), expkit.runs(), report.html and index.html in a
real headless Chromium, and TensorBoard event files read back with TensorBoard's own reader."""

from __future__ import annotations

import html
import io
import json
import re
import shlex
import struct
from pathlib import Path

import pytest
import torch

import expkit
from browser import Browser, assert_policy_blocks_loads
from conftest import Workspace

RUN3 = ("--epochs=3", "--max_train_samples=200", "--seed=0")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, list[Path]]:
    """A workspace with two finished tiny runs that differ in --lr and --hidden_sizes."""
    from conftest import _clean_env, write_idx_set

    tmp = tmp_path_factory.mktemp("reports")
    ws = Workspace(tmp / "ws", _clean_env(tmp))
    ws.root.mkdir()
    write_idx_set(ws.cache / "mnist")
    for flags in (("--lr=0.003", "--hidden_sizes=[32]"), ("--lr=0.0005", "--hidden_sizes=[16]")):
        result = ws.run("--experiment_id=mnist", *RUN3, *flags)
        assert result.returncode == 0, result.stderr
    return ws, ws.run_dirs()


def test_every_run_writes_a_report(two_runs: tuple[Workspace, list[Path]]) -> None:
    _, runs = two_runs
    for run_dir, lr in zip(runs, ("0.003", "0.0005"), strict=True):
        html = (run_dir / "report.html").read_text()
        assert "data:image/png;base64," in html
        assert not re.search(r"""(src|href)=["']?(https?:|//)""", html), "the page links nothing"
        record = json.loads((run_dir / "run.json").read_text())
        assert record["code"]["commit"] in html and record["environment"]["torch"] in html
        assert f"--lr={lr} " in html  # the command that made this run


def test_compare_shows_what_differs_and_the_metrics(two_runs: tuple[Workspace, list[Path]]) -> None:
    ws, runs = two_runs
    result = ws.cli("compare", *map(str, runs), "--out", str(ws.root / "cmp.png"))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()[:3]
    columns = header.split()
    assert {"lr", "hidden_sizes"} <= set(columns) and "seed" not in columns  # both used seed 0
    assert "batch_size" not in columns and "epochs" not in columns, "only arguments that differ"
    for run_dir, row in zip(runs, rows, strict=True):
        cells = dict(zip(columns, row.split(), strict=False))
        metrics = ws.metrics(run_dir)
        assert cells["run"] == run_dir.name
        assert float(cells["test_acc"]) == pytest.approx(metrics["test"]["test_acc"], abs=1e-4)
        assert float(cells["best_val_acc"]) == pytest.approx(metrics["best"]["val_acc"], abs=1e-4)
    width, height = png_size(ws.root / "cmp.png")
    assert width > 600 and height > 300

    by_glob = ws.run("compare", str(ws.results / "mnist" / "*"), "--out", str(ws.root / "g.png"))
    assert by_glob.returncode == 0 and by_glob.stdout.splitlines()[1:3] == rows
    last = ws.run("compare", "--experiment_id=mnist", "--last", "1", "--out", str(ws.root / "l.png"))
    assert last.returncode == 0 and runs[-1].name in last.stdout and runs[0].name not in last.stdout


@pytest.mark.parametrize(("target", "message"), [
    ("nowhere", "nowhere: no such folder"),
    ("cache", "not a run directory"),
    ("results/mnist/zzz*", "matches no folder"),
])
def test_compare_rejects_what_is_not_a_run(two_runs: tuple[Workspace, list[Path]], target: str,
                                           message: str) -> None:
    ws, _ = two_runs
    result = ws.run("compare", target)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_runs_api_for_notebooks(two_runs: tuple[Workspace, list[Path]]) -> None:
    ws, runs = two_runs
    found = expkit.runs(ws.results)
    assert [r.path for r in found] == runs
    assert len(found.filter(lr=0.003)) == 1 and found.filter(lr=0.003)[0].path == runs[0]
    assert found.filter(**{"model.hidden_sizes": [16]})[0].path == runs[1]
    assert len(found.filter(status="finished", experiment_id="mnist")) == 2
    assert found.filter(status="failed") == []
    run = found[0]
    assert run.history[-1]["epoch"] == 3 and run.config["optimizer"]["lr"] == 0.003
    assert run.summary()["test_acc"] == ws.metrics(runs[0])["test"]["test_acc"]
    pandas = pytest.importorskip("pandas")
    frame = found.to_pandas()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame["optimizer.lr"]) == [0.003, 0.0005]
    assert list(frame["test_acc"]) == [ws.metrics(r)["test"]["test_acc"] for r in runs]


def test_report_renders_in_chromium_without_network(two_runs: tuple[Workspace, list[Path]],
                                                    browser: Browser, tmp_path: Path) -> None:
    ws, runs = two_runs
    run_dir = runs[0]
    url = (run_dir / "report.html").absolute().as_uri()
    requests = browser.open(url)
    assert requests, "the browser saw the page load"
    assert all(r == url or r.startswith("data:") for r in requests), requests
    images = browser.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, "
                              "i.naturalHeight])")
    assert images and all(ok and w > 300 and h > 200 for ok, w, h in images), images
    shown = browser.evaluate("Object.fromEntries([...document.querySelectorAll('[id^=metric-]')]"
                             ".map(e => [e.id.slice(7), [e.dataset.value, e.textContent]]))")
    metrics = ws.metrics(run_dir)
    expected = {"test_acc": metrics["test"]["test_acc"], "test_loss": metrics["test"]["test_loss"],
                "best_val_acc": metrics["best"]["val_acc"],
                "final_val_loss": metrics["final"]["val_loss"]}
    for name, value in expected.items():
        data_value, text = shown[name]
        assert float(data_value) == pytest.approx(value, abs=1e-12)
        assert text == f"{value:.4f}"
    assert browser.evaluate("document.getElementById('status').textContent") == "finished"
    assert_policy_blocks_loads(browser)
    shot = browser.screenshot(tmp_path / "report.png")
    width, height = png_size(shot)
    assert width >= 1000 and height > 1000
    print(f"report screenshot: {shot}")


def test_artifacts_render_in_the_report(workspace: Workspace, browser: Browser) -> None:
    """char_lm's samples, one per evaluation, newest first, as text (escaped) in Chromium."""
    ws = workspace
    result = ws.run("--experiment_id=char_lm", "--epochs=2", "--seed=0", "--max_chars=20000",
                    "--n_layer=1", "--n_embd=32", "--block_size=32", "--sample_length=40")
    assert result.returncode == 0, result.stderr
    run_dir = ws.last_run("char_lm")
    url = (run_dir / "report.html").absolute().as_uri()
    requests = browser.open(url)
    assert all(r == url or r.startswith("data:") for r in requests), requests
    shown = browser.evaluate("[...document.querySelectorAll('.artifact')].map(e => "
                             "[e.dataset.name, e.dataset.epoch, e.querySelector('pre').textContent])")
    samples = {e: (run_dir / "artifacts" / "sample" / f"{e}.txt").read_text() for e in ("1", "2")}
    assert shown == [["sample", "2", samples["2"]], ["sample", "1", samples["1"]]]


def test_image_artifacts_are_pngs_and_their_names_stay_in_the_run(tmp_path: Path) -> None:
    from PIL import Image

    from expkit.errors import ExpkitError
    from expkit.reports.report import _artifacts_html
    from expkit.tracking.artifacts import Artifacts, png_bytes

    gray = torch.linspace(0, 1, 12).reshape(3, 4)
    rgb = torch.stack([gray, 1 - gray, gray * 0])
    logged = []

    class Tracker:
        def log_artifact(self, name: str, path: Path, value: object, epoch: int) -> None:
            logged.append((name, path.name, epoch))

    artifacts = Artifacts(tmp_path, [Tracker()])
    artifacts.epoch = 3
    with Image.open(artifacts.save("grid", rgb)) as image:  # type: ignore[arg-type]
        assert image.mode == "RGB" and image.size == (4, 3)
        assert image.getpixel((0, 0)) == (0, 255, 0) and image.getpixel((3, 2)) == (255, 0, 0)
    with Image.open(io.BytesIO(png_bytes(gray))) as image:
        assert image.mode == "L" and (image.getpixel((0, 0)), image.getpixel((3, 2))) == (0, 255)
    with Image.open(io.BytesIO(png_bytes((gray * 255).to(torch.uint8)[None]))) as image:
        assert image.mode == "L" and image.getpixel((3, 2)) == 255
    assert logged == [("grid", "3.png", 3)]
    assert '<img alt="grid 3" src="data:image/png;base64,' in _artifacts_html(tmp_path)
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(ExpkitError, match="artifact name"):
            artifacts.save(bad, "text")
    with pytest.raises(ExpkitError, match=r"an image artifact is .* got shape \(2, 3, 4\)"):
        png_bytes(torch.zeros(2, 3, 4))
    assert sorted(p.name for p in (tmp_path / "artifacts").rglob("*")) == ["3.png", "grid"]


def test_index_lists_sorts_and_compares_runs(two_runs: tuple[Workspace, list[Path]],
                                             browser: Browser, tmp_path: Path) -> None:
    ws, runs = two_runs
    result = ws.cli("report", "--index")
    assert result.returncode == 0, result.stderr
    index = ws.results / "index.html"
    one = ws.cli("report", str(runs[0].relative_to(ws.root)))  # a folder as typed, relative
    assert one.returncode == 0, one.stderr
    assert [result.stdout.strip(), one.stdout.strip()] == [
        f"wrote {index.absolute()}", f"wrote {(runs[0] / 'report.html').absolute()}"], "one form"
    requests = browser.open(index.absolute().as_uri())
    assert all(r == index.absolute().as_uri() or r.startswith("data:") for r in requests), requests
    assert_policy_blocks_loads(browser)
    browser.events.clear()
    links = browser.evaluate("[...document.querySelectorAll('table.runs a')].map(a => a.href)")
    assert sorted(links) == sorted((r / "report.html").absolute().as_uri() for r in runs)
    groups = browser.evaluate("[...document.querySelectorAll('h2.experiment')].map(h => [h.textContent, "
                              "h.nextElementSibling.querySelector('.dataset').textContent])")
    assert groups == [["mnist", "mnist"]], "a table per experiment, saying which dataset it used"
    column = browser.evaluate("[...document.querySelectorAll('table.runs th')].findIndex("
                              "th => th.textContent === 'test_acc')")
    values = []
    for _ in range(2):  # click the header: ascending, then descending
        browser.evaluate(f"document.querySelectorAll('table.runs th')[{column}].click()")
        values.append(browser.evaluate(f"[...document.querySelectorAll('table.runs tbody tr')].map("
                                       f"r => +r.cells[{column}].dataset.value)"))
    assert values[0] == sorted(values[0]) and values[1] == sorted(values[1], reverse=True)
    headers = browser.evaluate("[...document.querySelectorAll('table.runs th.arg')]"
                               ".map(th => th.textContent)")
    assert headers == ["lr", "hidden_sizes"], "the arguments that differ, by flag, before any tick"
    all_headers = browser.evaluate("[...document.querySelectorAll('table.runs th')]"
                                   ".map(th => th.textContent)")
    assert all_headers[4] == "epochs run" and all_headers.index("test_acc") < all_headers.index("lr"), \
        "the metrics come before the arguments"
    first_arg = all_headers.index("lr")
    by_id = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('table.runs tbody tr')].map(r => [r.cells[1]"
        f".textContent, [...r.cells].slice({first_arg}, {first_arg + 2}).map(c => c.textContent)]))")
    assert by_id == {runs[0].name: ["0.003", "[32]"], runs[1].name: ["0.0005", "[16]"]}
    browser.evaluate("document.querySelectorAll('input.pick').forEach(c => { c.checked = true; "
                     "c.dispatchEvent(new Event('change')); })")
    browser.evaluate("window.comparing")  # the ticked runs' curves, loaded from beside the page
    loaded = sorted(e["params"]["request"]["url"] for e in browser.events
                    if e.get("method") == "Network.requestWillBeSent")
    curves = ws.results.absolute() / ".expkit" / "curves" / "mnist"
    assert loaded == sorted((curves / f"{r.name}.js").as_uri() for r in runs), \
        "a run's curve is loaded when it is ticked, from the results folder"
    compared = browser.evaluate("[...document.querySelectorAll('#compare th')].map(th => th.textContent)")
    assert compared[:3] == ["run", "lr", "hidden_sizes"] and "batch_size" not in compared
    measure = """(() => {
      const lines = el => { const r = document.createRange(); r.selectNodeContents(el);
        return r.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight); };
      const cells = [...document.querySelectorAll('th, table.runs td:nth-child(2), '
        + 'table.runs td:nth-child(4), #compare td:first-child, .u-legend .u-label')];
      return {width: innerWidth, page: document.documentElement.scrollWidth,
              hidden: [...document.querySelectorAll('table')].map(t => t.parentElement)
                .filter(box => box.scrollWidth > box.clientWidth).length,
              wrapped: cells.filter(c => lines(c) > 1.5).map(c => c.textContent),
              started: document.querySelector('table.runs td:nth-child(4)').textContent}; })()"""
    layout = browser.evaluate(measure)
    assert layout["width"] == 1280 and layout["page"] <= 1280, layout
    assert layout["hidden"] == 0, "no table is cut off or needs scrolling at 1280 px"
    assert layout["wrapped"] == [], "headers, run ids, timestamps and legend entries stay on one line"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", layout["started"]), layout
    browser.call("Emulation.setDeviceMetricsOverride", session=True, width=700, height=1000,
                 deviceScaleFactor=1, mobile=False)
    try:  # a narrow window: tables scroll in their boxes, the page itself does not, nothing wraps
        browser.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        narrow = browser.evaluate(measure)  # (after the charts followed the width: a frame)
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride", session=True)
    assert narrow["width"] == 700 and narrow["page"] <= 700 and narrow["wrapped"] == [], narrow
    chart = browser.evaluate("""(() => { const u = expkitCharts['compare-chart'];
      return {labels: u.series.map(s => s.label), x: [...u.data[0]], axes: u.axes.map(a => a.label),
              points: u.data.slice(1).map(d => d.filter(v => v != null).length),
              title: u.root.querySelector('.u-title').textContent}; })()""")
    assert chart["axes"] == ["epoch", "val_acc"] and chart["x"] == [1, 2, 3], chart
    assert chart["points"] == [3, 3] and chart["title"] == "val_acc"
    assert [label.split()[0] for label in chart["labels"][1:]] == [r.name for r in runs]
    assert "lr=0.003" in chart["labels"][1] and "hidden_sizes=[16]" in chart["labels"][2]
    browser.evaluate("const s = document.getElementById('chart-metric'); s.value = 'train_loss'; "
                     "s.dispatchEvent(new Event('change'))")
    assert browser.evaluate("expkitCharts['compare-chart'].axes[1].label") == "train_loss"
    assert browser.errors() == []
    browser.screenshot(tmp_path / "index.png")


def test_tensorboard_events_equal_history(data_workspace: Workspace) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ws = data_workspace
    result = ws.run("--experiment_id=mnist", *RUN3, "--use_tensorboard=true")
    assert result.returncode == 0, result.stderr
    run_dir = ws.last_run()
    history = expkit.runs(ws.results)[0].history
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    images = acc.Tags()["images"]
    assert images == ["history"], "history.png goes to TensorBoard as an image"
    (image,) = acc.Images("history")
    assert image.encoded_image_string == (run_dir / "history.png").read_bytes(), "the final draw"
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2, 3]
        assert [e.value for e in events] == pytest.approx([row[key] for row in history], rel=1e-6)
    hparams = event_accumulator.EventAccumulator(str(run_dir / "tensorboard" / "hparams"))
    hparams.Reload()
    test_acc = hparams.Scalars("hparam/test_acc")[0].value
    assert test_acc == pytest.approx(ws.metrics(run_dir)["test"]["test_acc"], rel=1e-6)


def test_compare_labels_by_flag_and_the_report_command_reproduces(data_workspace: Workspace) -> None:
    """compare names each differing argument by its flag (the scheduler's and the dataset's
    `name` are --scheduler and --dataset), writes values as typed (true/false, auto); the
    report's command, copied as it is, gives the same run again (the drawn seed included)."""
    ws = data_workspace
    common = ("--experiment_id=mnist", "--epochs=1", "--max_train_samples=100")
    assert ws.run(*common).returncode == 0  # seed drawn, use_cuda auto
    drawn = ws.last_run()
    assert ws.run(*common, "--scheduler=cosine", "--dataset=fashion_mnist", "--deterministic=true",
                  "--use_cuda=false", "--seed=1").returncode == 0
    result = ws.run("compare", str(drawn), str(ws.last_run()))
    assert result.returncode == 0, result.stderr
    header, first, second = (line.split() for line in result.stdout.splitlines()[:3])
    assert {"scheduler", "dataset", "deterministic", "seed", "use_cuda"} <= set(header), header
    assert "name" not in header
    cells = [dict(zip(header, row, strict=False)) for row in (first, second)]
    assert [c["scheduler"] for c in cells] == ["none", "cosine"]
    assert [c["dataset"] for c in cells] == ["mnist", "fashion_mnist"]
    assert [c["deterministic"] for c in cells] == ["false", "true"]
    assert [c["use_cuda"] for c in cells] == ["auto", "false"]

    page = (drawn / "report.html").read_text()
    command = html.unescape(re.search(r'<pre id="command">(.*?)</pre>', page, re.S).group(1))
    seed = json.loads((drawn / "config.json").read_text())["seed"]
    words = shlex.split(command)
    assert f"--seed={seed}" in words and "--use_cuda=false" in words, command
    assert words[1].endswith("run.py")
    again = ws.run(*words[2:])  # the command as copied: the same run
    assert again.returncode == 0, again.stderr
    assert ws.metrics(ws.last_run())["test"] == ws.metrics(drawn)["test"]
    assert ">false</td>" in page and ">False<" not in page, "booleans as typed: true/false"
    assert "<th>trainer.grad_clip_norm</th><td>none</td>" in page, "off, not auto"
    assert "<th>use_cuda</th><td>false (auto)</td>" in page, "what auto chose"
