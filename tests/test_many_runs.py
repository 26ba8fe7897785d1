"""A results folder of many runs: the summary cache beside it (RESULTS/.expkit/) never shows
what the files no longer say (a run that finishes, resumes, is deleted, or has its metrics
rewritten), survives two writers and a corrupt file, and index.html stays small and usable
(sort, filter, tick, chart) with thousands of runs, in a real Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import expkit
from browser import Browser
from conftest import Workspace
from expkit.rundir.results import read_run
from runs import HOST, index_rows, write_run

HOUR_NS = 3600 * 10**9


def age(results: Path, ns: int = HOUR_NS) -> None:
    """Every file under `results` as if written `ns` ago (so that the cache keeps it: files
    changed within two seconds are read again each time)."""
    for path in results.rglob("*"):
        if path.is_file():
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns - ns, st.st_mtime_ns - ns))


def from_files(results: Path) -> dict[str, Any]:
    """What each run's files say, read without the cache: the oracle."""
    return {run_dir.name: facts(read_run(run_dir))
            for run_dir in sorted(results.glob("*/*")) if (run_dir / "run.json").is_file()}


def facts(run: Any) -> dict[str, Any]:
    """What a reader shows of a run."""
    return {"status": run.status, "summary": run.summary(), "config": run.config,
            "record": run.record, "metrics": run.metrics, "progress": run.progress}


def through_cache(results: Path) -> dict[str, Any]:
    """What expkit.runs() says (from the cache where it holds the run)."""
    return {run.id: facts(run) for run in expkit.runs(results)}


def shard(results: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / ".expkit" / "summaries" / "mnist.json").read_text())
    return data


def replace_keeping_mtime(path: Path, text: str) -> None:
    """Rewrite a file as expkit does (a new file renamed over it), then give it back its old
    modification time: only the inode tells the change."""
    old = path.stat()
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))


def rewrite_in_place_keeping_mtime(path: Path, text: str) -> None:
    """Rewrite a file in place (its inode kept, as an editor may), then give it back its old
    modification time: only the size tells the change."""
    old = path.stat()
    with path.open("r+") as f:
        f.write(text)
        f.truncate()
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))


def test_the_cache_never_shows_what_the_files_no_longer_say(workspace: Workspace) -> None:
    results = workspace.results
    finished = write_run(results, "20261201-100000-000001", 0.01, 0, 0.91)
    running = write_run(results, "20261201-100001-000002", 0.01, 1, None, pid=os.getpid())
    doomed = write_run(results, "20261201-100002-000003", 0.003, 0, 0.95)
    age(results)
    assert through_cache(results) == from_files(results)
    cached = shard(results)["runs"]
    assert set(cached) == {finished.name, running.name, doomed.name}, "every aged run is cached"
    assert through_cache(results)[running.name]["status"] == "running"  # our pid: alive

    # the running run finishes: run.json and metrics.json are replaced
    record = json.loads((running / "run.json").read_text())
    (running / "run.json").write_text(json.dumps({**record, "status": "finished"}))
    (running / "metrics.json").write_text(json.dumps({"monitor": "val_acc", "mode": "max",
                                                      "epochs_run": 3, "test": {"test_acc": 0.5}}))
    seen = through_cache(results)
    assert seen[running.name]["status"] == "finished" and seen[running.name]["summary"]["test_acc"] == 0.5
    # a resume rewrote the metrics with the same size and the same mtime: a new file all the same
    metrics = (finished / "metrics.json").read_text()
    assert '"test_acc": 0.91' in metrics
    replace_keeping_mtime(finished / "metrics.json", metrics.replace('"test_acc": 0.91', '"test_acc": 0.19'))
    assert through_cache(results)[finished.name]["summary"]["test_acc"] == 0.19
    # written in place (the same inode) and given back its mtime: only the size tells
    inode = (finished / "metrics.json").stat().st_ino
    rewrite_in_place_keeping_mtime(finished / "metrics.json", (finished / "metrics.json")
                                   .read_text().replace('"test_acc": 0.19', '"test_acc": 0.5'))
    assert (finished / "metrics.json").stat().st_ino == inode
    assert through_cache(results)[finished.name]["summary"]["test_acc"] == 0.5
    # a history row more (a resumed run's next epoch): its progress follows
    with (finished / "history.csv").open("a") as f:
        f.write("4,0.2,0.3,0.99\n")
    os.remove(finished / "metrics.json")  # and it is not finished yet
    record = json.loads((finished / "run.json").read_text())
    (finished / "run.json").write_text(json.dumps({**record, "status": "running", "pid": os.getpid()}))
    seen = through_cache(results)
    assert seen[finished.name]["progress"][0] == 4 and seen[finished.name]["status"] == "running"
    assert seen[finished.name]["summary"]["final_val_acc"] == 0.99, "the last row of history.csv"
    # a deleted run is gone, from the listing and from the cache
    shutil.rmtree(doomed)
    assert doomed.name not in through_cache(results) and doomed.name not in shard(results)["runs"]
    age(results)
    assert through_cache(results) == from_files(results)
    listed = workspace.cli("list", entry="module")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    shutil.rmtree(results / ".expkit")  # the same listing from the files alone
    assert workspace.cli("list", entry="module").stdout == listed.stdout


def test_a_killed_run_resumed_shows_finished_next_call(data_workspace: Workspace) -> None:
    """A real run killed in epoch 2 is cached as killed; once resumed, every reader says
    finished, with the resumed run's epochs and metrics."""
    ws = data_workspace
    args = ("--experiment_id=mnist", "--epochs=2", "--max_train_samples=200", "--seed=0")
    killed = ws.fork(*args, env={"EXPKIT_TEST_AT": "step:4:KILL"})  # 3 steps an epoch
    assert killed.returncode == -9, killed.stderr
    run = ws.last_run()
    age(ws.results)
    [before] = expkit.runs(ws.results)
    assert before.status == "killed" and before.progress[0] == 1
    assert run.name in shard(ws.results)["runs"]
    assert ws.run("resume", str(run)).returncode == 0
    [after] = expkit.runs(ws.results)
    assert after.status == "finished" and after.progress[0] == 2
    assert after.summary() == read_run(run).summary() and "test_acc" in after.summary()
    listed = ws.run("list")
    assert "finished" in listed.stdout.splitlines()[1].split(), listed.stdout


def test_two_writers_at_once_leave_a_cache_that_agrees_with_the_files(workspace: Workspace) -> None:
    results = workspace.results
    for k in range(40):
        write_run(results, f"20261201-10{k:04d}-{k:06x}", 0.01, k, 0.5 + k / 100)
    age(results)
    script = textwrap.dedent(f"""
        import json, os, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import expkit
        from runs import write_run
        results, me = Path({str(results)!r}), int(sys.argv[1])
        for k in range(25):
            run = write_run(results, f"20261202-{{me}}{{k:05d}}-{{me:03x}}{{k:03x}}", 0.003, k, 0.7)
            for path in run.iterdir():  # old enough to be cached: each call writes the cache
                os.utime(path, ns=(path.stat().st_atime_ns - {HOUR_NS}, path.stat().st_mtime_ns - {HOUR_NS}))
            seen = {{r.id for r in expkit.runs(results)}}
            assert f"20261202-{{me}}{{k:05d}}-{{me:03x}}{{k:03x}}" in seen
        """)
    writers = [subprocess.Popen([sys.executable, "-c", script, str(me)], env=workspace.env,
                                stderr=subprocess.PIPE, text=True) for me in (1, 2)]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
        assert "warning" not in err, "neither writer met a half-written cache"
    assert len(through_cache(results)) == 90
    age(results)
    assert through_cache(results) == from_files(results)
    assert len(shard(results)["runs"]) == 90


def test_a_corrupt_cache_is_rebuilt_with_one_warning(workspace: Workspace) -> None:
    results = workspace.results
    for k in range(3):
        write_run(results, f"20261201-10000{k}-{k:06x}", 0.01, k, 0.9)
    age(results)
    expkit.runs(results)
    cache = results / ".expkit" / "summaries" / "mnist.json"
    cache.write_bytes(cache.read_bytes()[:100])  # cut short, as by a full disk
    first = workspace.cli("list", entry="module")
    assert first.returncode == 0, first.stderr
    [line] = first.stderr.splitlines()
    assert line.startswith(f"warning: the summary cache {cache} could not be read") \
        and line.endswith("rebuilt it from the run folders"), line
    assert first.stdout.count("finished") == 3
    again = workspace.cli("list", entry="module")
    assert again.stderr == "" and again.stdout == first.stdout, "rebuilt: no warning next time"
    assert through_cache(results) == from_files(results)


def synthetic(results: Path, n: int) -> None:
    """`n` finished mnist runs as a run leaves them (3 seeds of n/3 learning rates), fast."""
    rng_values = [(k % 7) / 10 + (k % 11) / 1000 for k in range(n)]
    for k in range(n):
        run = results / "mnist" / f"20261201-{k // 3600:02d}{k // 60 % 60:02d}{k % 60:02d}-{k:06x}"
        run.mkdir(parents=True)
        lr = round(0.001 * (1 + k // 3 % 50), 6)
        config = {"experiment_id": "mnist", "seed": k % 3, "epochs": 3,
                  "optimizer": {"name": "adam", "lr": lr}, "model": {"hidden_sizes": [16]}}
        (run / "config.json").write_text(json.dumps(config))
        (run / "run.json").write_text(json.dumps({
            "experiment_id": "mnist", "status": "finished", "host": HOST,
            "started": f"2026-12-01T{k // 3600:02d}:{k // 60 % 60:02d}:{k % 60:02d}+00:00",
            "start_ns": 1_764_547_200_000_000_000 + k * 10**9}))
        rows = [{"epoch": e, "val_loss": 1.0 / e + rng_values[k], "val_acc": 0.5 + rng_values[k] / e}
                for e in (1, 2, 3)]
        (run / "history.csv").write_text("epoch,val_loss,val_acc\n" + "".join(
            f"{r['epoch']},{r['val_loss']},{r['val_acc']}\n" for r in rows))
        (run / "metrics.json").write_text(json.dumps({
            "monitor": "val_acc", "mode": "max", "epochs_run": 3, "best_epoch": 3,
            "final": rows[-1], "best": rows[-1], "test": {"test_acc": 0.6 + rng_values[k] / 2}}))
        (run / "report.html").write_text("<!doctype html><title>report</title>")


def test_a_big_index_sorts_filters_ticks_and_charts(workspace: Workspace, browser: Browser) -> None:
    n = 1500
    synthetic(workspace.results, n)
    done = workspace.cli("report", "--index", entry="module")
    assert done.returncode == 0, done.stderr
    index = workspace.results / "index.html"
    assert index.stat().st_size < 400 * n, "at most 400 bytes a run: 10,000 runs in 4 MB"
    browser.open(index.absolute().as_uri())
    drawn = "document.querySelectorAll('table.runs tbody tr.run').length"
    assert 0 < browser.evaluate(drawn) < 200, "only the rows in view (and a margin) are drawn"
    assert browser.evaluate("document.querySelector('table.runs tbody').offsetHeight") > 20 * n, \
        "the table is as tall as all its rows: the scroll bar tells where one is"
    head = browser.evaluate("[...document.querySelectorAll('table.runs th')].map(th => th.textContent)")
    test_col = head.index("test_acc")
    ids = "[...document.querySelectorAll('table.runs tbody tr.run')].map(r => r.cells[1].textContent)"
    values = ("[...document.querySelectorAll('table.runs tbody tr.run')]"
              f".map(r => +r.cells[{test_col}].dataset.value)")
    rows = index_rows(workspace.results)
    by_value = sorted(rows, key=lambda rid: (-rows[rid]["metrics"]["test_acc"], rows[rid]["index"]))
    browser.evaluate(f"document.querySelectorAll('table.runs th')[{test_col}].click()")
    browser.evaluate(f"document.querySelectorAll('table.runs th')[{test_col}].click()")  # descending
    shown = browser.evaluate(ids)
    assert shown == by_value[:len(shown)], "the best first, over all the runs, not the drawn ones"
    assert browser.evaluate(values) == sorted(browser.evaluate(values), reverse=True)
    # scrolled to the end: the last rows of the order are drawn
    browser.evaluate("(() => { const box = document.querySelector('.rows'); "
                     "box.scrollTop = box.scrollHeight; box.dispatchEvent(new Event('scroll')); })()")
    browser.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    assert browser.evaluate(ids)[-1] == by_value[-1]
    # filtered by a flag's value: those runs and no others
    browser.evaluate("(() => { const box = document.querySelector('input.filter'); box.value = 'lr=0.002'; "
                     "box.dispatchEvent(new Event('input')); })()")
    wanted = sorted((rid for rid in rows if rows[rid]["args"]["lr"][1] == 0.002),
                    key=lambda rid: (-rows[rid]["metrics"]["test_acc"], rows[rid]["index"]))
    assert browser.evaluate(ids) == wanted and len(wanted) == n // 150 * 3
    assert browser.evaluate("document.querySelector('.count').textContent") == f"{len(wanted)} of {n} shown"
    # ticked: their curves load, the chart draws them
    browser.evaluate("document.querySelectorAll('input.pick').forEach((c, k) => { if (k < 2) { "
                     "c.checked = true; c.dispatchEvent(new Event('change')); } })")
    browser.evaluate("window.comparing")
    chart = browser.evaluate("(() => { const u = expkitCharts['compare-chart']; return {labels: "
                             "u.series.slice(1).map(s => s.label.split(' ')[0]), points: u.data.slice(1)"
                             ".map(d => d.filter(v => v != null))}; })()")
    ticked = sorted(wanted[:2], key=lambda rid: rows[rid]["index"])
    assert chart["labels"] == ticked
    for rid, points in zip(ticked, chart["points"], strict=True):
        history = read_run(workspace.results / "mnist" / rid).history
        assert points == pytest.approx([row["val_acc"] for row in history], rel=1e-12)
    # the settings over seeds: every setting, exact
    page = index.read_text()
    table = page[page.index('<table class="groups">'):]
    assert table[:table.index("</table>")].count("<tr>") == 1 + 50
    assert browser.errors() == []


def test_compare_draws_compare_png_again_only_when_what_it_shows_changed(
        workspace: Workspace) -> None:
    """A second compare over unchanged runs leaves compare.png as it is (the same file, not
    rewritten); a run whose history changed, a setting added, the file deleted or replaced,
    or another --out draws it again; the numbers printed never come from a memo."""
    ws = workspace
    results = ws.results
    for i, (lr, seed) in enumerate([(1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)]):
        write_run(results, f"20261201-10000{i}-00000{i}", lr, seed, 0.8 + i / 100)
    (ws.root / "config.yaml").write_text(f"results_dir: {results}\ncache_dir: {ws.cache}\n")
    png = results / "compare.png"

    def compare(*flags: str) -> tuple[int, int, int]:
        done = ws.run("compare", "--experiment_id=mnist", "--format=csv", *flags)
        assert done.returncode == 0, done.stderr
        stat = png.stat()
        return stat.st_mtime_ns, stat.st_ino, stat.st_size

    first = compare()
    assert compare() == first, "unchanged runs: the same compare.png, not drawn again"
    assert ws.run("compare", "--experiment_id=mnist").returncode == 0
    assert compare() == first, "the text format shows the same plot"
    history = results / "mnist" / "20261201-100000-000000" / "history.csv"
    history.write_text(history.read_text() + "4,0.2,0.3,0.95\n")
    again = compare()
    assert again != first, "a run's history changed: drawn again"
    png.unlink()
    assert compare() and png.is_file(), "deleted: drawn again"
    png.write_bytes(b"not a plot")
    compare()
    assert png.read_bytes().startswith(b"\x89PNG"), "replaced by another file: drawn again"
    write_run(results, "20261201-100009-000009", 3e-2, 0, 0.7)
    before = png.stat().st_mtime_ns
    compare()
    assert png.stat().st_mtime_ns != before, "a new setting: drawn again"
    other = ws.root / "elsewhere.png"
    done = ws.run("compare", "--experiment_id=mnist", f"--out={other}")
    assert done.returncode == 0 and other.is_file()


def test_the_cache_keeps_each_values_type_and_each_files_key_order(workspace: Workspace) -> None:
    """Values equal in Python but not in JSON (1, 1.0, true) and keys in another order come
    back from the cache as the files hold them."""
    results = workspace.results
    runs = [write_run(results, f"20261201-10000{i}-00000{i}", 0.01, i, 0.9) for i in range(3)]
    for run, value in zip(runs, (1, 1.0, True), strict=True):  # equal in Python, not in JSON
        config = json.loads((run / "config.json").read_text())
        rest = {k: v for k, v in config.items() if k != "epochs"}
        # and the last run's keys in another order than the others'
        (run / "config.json").write_text(json.dumps(
            {**rest, "epochs": value} if run == runs[-1] else {"epochs": value, **rest}))
    age(results)
    expected = {r.name: (r / "config.json").read_text() for r in runs}
    for _ in range(2):  # from the files (writing the cache), then from the cache
        seen = {run.id: json.dumps(run.config) for run in expkit.runs(results)}
        assert seen == {k: json.dumps(json.loads(v)) for k, v in expected.items()}
    cached = shard(results)["runs"]
    assert set(cached) == {r.name for r in runs}, "every aged run is in the cache"
    assert sum(bool(entry["c"]) for entry in cached.values()) >= 2, "the runs' own values are kept"


def test_a_run_written_in_the_last_two_seconds_is_never_cached(workspace: Workspace) -> None:
    """A file changed within the filesystem's timestamp granularity could change again
    unseen: runs just written are read from their files, and cached only once older."""
    results = workspace.results
    assert expkit.runs(results / "nowhere") == [], "no results folder: no runs"
    write_run(results, "20261201-100000-000000", 0.01, 0, 0.9)
    assert len(expkit.runs(results)) == 1
    cache = results / ".expkit" / "summaries" / "mnist.json"
    assert not cache.exists() or shard(results)["runs"] == {}, "not cached while fresh"
    age(results)
    assert len(expkit.runs(results)) == 1 and len(shard(results)["runs"]) == 1
