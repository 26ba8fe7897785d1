"""Repeated seeds as groups: `expkit repeat`, aggregation (mean ± std, Student's t intervals,
Welch's test) in compare, expkit.runs() and index.html, and the tables a paper takes."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from expkit.utils import stats

DIABETES = ("--experiment_id=diabetes", "--epochs=2")


def _group_runs(results: Path, experiment_id: str = "diabetes") -> dict[str, list[Path]]:
    """Run directories by the group their run.json names."""
    groups: dict[str, list[Path]] = {}
    for record in sorted((results / experiment_id).glob("*/run.json")):
        group = json.loads(record.read_text()).get("group")
        if group:
            groups.setdefault(group["name"], []).append(record.parent)
    return groups


def _test_values(run_dirs: list[Path], metric: str) -> list[float]:
    return [json.loads((d / "metrics.json").read_text())["test"][metric] for d in run_dirs]


# ---- the statistics, against scipy -----------------------------------------------------------


@pytest.mark.parametrize("df", [1, 2, 2.5, 4, 9, 30, 250])
def test_student_t_quantiles_and_cdf_equal_scipy(df: float) -> None:
    for p in (0.5, 0.8, 0.95, 0.975, 0.995, 0.025):
        assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-12)
    for t in (-7.0, -1.5, 0.0, 0.4, 2.2, 12.0):
        assert stats.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("sizes", [(2, 2), (3, 5), (4, 3), (10, 7)])
def test_summaries_and_welch_equal_numpy_and_scipy(sizes: tuple[int, int]) -> None:
    generator = np.random.default_rng(sum(sizes))  # fixed data: the test never depends on chance
    a, b = generator.normal(0.80, 0.01, sizes[0]), generator.normal(0.78, 0.03, sizes[1])
    s = stats.summarize(list(a))
    low, high = scipy_stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=scipy_stats.sem(a))
    assert (s.n, s.mean, s.std) == (len(a), pytest.approx(a.mean(), rel=1e-12),
                                    pytest.approx(a.std(ddof=1), rel=1e-12))
    assert (s.low, s.high) == (pytest.approx(low, rel=1e-10), pytest.approx(high, rel=1e-10))
    w, reference = stats.welch(list(a), list(b)), scipy_stats.ttest_ind(a, b, equal_var=False)
    assert w.t == pytest.approx(reference.statistic, rel=1e-10)
    assert w.p == pytest.approx(reference.pvalue, rel=1e-8)
    assert w.d == pytest.approx((a.mean() - b.mean()) / math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))


def test_one_value_has_a_mean_but_no_spread() -> None:
    s = stats.summarize([0.5])
    assert s.mean == 0.5 and math.isnan(s.std) and math.isnan(s.low)
    with pytest.raises(ValueError):
        stats.welch([1.0], [1.0, 2.0])


# ---- repeat, compare, tables ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_settings(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Two settings of diabetes, three seeds each: lr 1e-3 in this process, lr 3e-3 on
    worker processes (two: 2 seeds and 1)."""
    from conftest import Workspace, _clean_env

    tmp = tmp_path_factory.mktemp("repeat")
    (tmp / "ws").mkdir()
    ws = Workspace(tmp / "ws", _clean_env(tmp))
    # seeds given, not drawn: the numbers (and compare.png's bands) are the same every time
    # (drawing is tested by test_a_killed_seed_resumes_when_the_command_runs_again)
    first = ws.run("repeat", "--seeds=0,1,2", *DIABETES)
    second = ws.run("repeat", "--seeds=3,4,5", "--workers=2", *DIABETES, "--lr=3e-3")
    return ws, first, second


@pytest.mark.slow  # the module's six runs of two settings
def test_repeat_runs_each_seed_as_an_ordinary_run_of_its_group(two_settings) -> None:  # type: ignore[no-untyped-def]
    ws, first, second = two_settings
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    groups = _group_runs(ws.results)
    assert len(groups) == 2 and all(len(dirs) == 3 for dirs in groups.values())
    for name, dirs in groups.items():
        recorded = json.loads((ws.results / "repeats" / name / "repeat.json").read_text())
        seeds = [json.loads((d / "config.json").read_text())["seed"] for d in dirs]
        assert sorted(seeds) == sorted(recorded["seeds"]) and len(set(seeds)) == 3
        for d in dirs:
            record = json.loads((d / "run.json").read_text())
            assert record["status"] == "finished" and record["group"]["seed"] == record["seed"]["value"]
            assert f"--seed={record['seed']['value']}" in record["argv"]
    assert len(re.findall(r"^seed \d+: finished", second.stdout, re.M)) == 3, second.stdout
    assert "N" in first.stdout and "test_r2" in first.stdout


@pytest.mark.slow  # the module's six runs of two settings
def test_compare_aggregates_each_setting_as_numpy_and_scipy_do(two_settings) -> None:  # type: ignore[no-untyped-def]
    ws, _, _ = two_settings
    result = ws.run("compare", "--experiment_id=diabetes", "--format=csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2 and {row["lr"] for row in rows} == {"0.001", "0.003"}
    by_lr = {row["lr"]: row for row in rows}
    for dirs in _group_runs(ws.results).values():
        lr = json.loads((dirs[0] / "config.json").read_text())["optimizer"]["lr"]
        row = by_lr["0.001" if lr == 1e-3 else "0.003"]
        assert row["n"] == "3"
        for metric in ("test_r2", "test_mae", "test_loss"):
            values = np.array(_test_values(dirs, metric))
            low, high = scipy_stats.t.interval(0.95, 2, loc=values.mean(), scale=scipy_stats.sem(values))
            assert float(row[f"{metric}_mean"]) == pytest.approx(values.mean(), rel=1e-12)
            assert float(row[f"{metric}_std"]) == pytest.approx(values.std(ddof=1), rel=1e-12)
            assert float(row[f"{metric}_ci_low"]) == pytest.approx(low, rel=1e-9)
            assert float(row[f"{metric}_ci_high"]) == pytest.approx(high, rel=1e-9)
    import expkit

    groups = expkit.runs(ws.results).groups()
    assert sorted(g.n for g in groups) == [3, 3]
    rows_api = expkit.runs(ws.results).aggregate()
    assert {round(r["test_r2_mean"], 12) for r in rows_api} == \
        {round(float(row["test_r2_mean"]), 12) for row in rows}


@pytest.mark.slow  # the module's six runs of two settings
def test_the_text_table_marks_the_best_and_tells_whether_the_difference_is_noise(two_settings) -> None:  # type: ignore[no-untyped-def]
    ws, _, _ = two_settings
    result = ws.run("compare", "--experiment_id=diabetes")
    assert result.returncode == 0, result.stderr
    groups = {json.loads((dirs[0] / "config.json").read_text())["optimizer"]["lr"]: dirs
              for dirs in _group_runs(ws.results).values()}
    r2 = {lr: np.array(_test_values(dirs, "test_r2")) for lr, dirs in groups.items()}
    best = max(r2, key=lambda lr: r2[lr].mean())  # r2: higher is better
    other = next(lr for lr in r2 if lr != best)
    reference = scipy_stats.ttest_ind(r2[best], r2[other], equal_var=False)
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("test_r2: "))
    assert f"lr={best:g} vs lr={other:g}" in line.replace("0.001", "1e-03").replace("0.003", "3e-03") \
        or f"lr={best} vs lr={other}" in line, line
    assert f"p {reference.pvalue:.3g}" in line and f"t {reference.statistic:.2f}" in line, line
    assert "Student's t" in result.stdout  # the footnote says which interval
    row = next(ln for ln in result.stdout.splitlines() if ln.startswith("test_r2 "))
    best_cell = f"{r2[best].mean():.4f} ± {r2[best].std(ddof=1):.4f}"
    assert row.count(" *") == 1 and re.search(re.escape(best_cell) + r" \[[-0-9., ]+\] \*", row), row


@pytest.mark.slow  # the module's six runs of two settings
def test_markdown_and_latex_tables_are_ready_to_paste(two_settings) -> None:  # type: ignore[no-untyped-def]
    ws, _, _ = two_settings
    markdown = ws.run("compare", "--experiment_id=diabetes", "--format=markdown")
    latex = ws.run("compare", "--experiment_id=diabetes", "--format=latex")
    assert markdown.returncode == latex.returncode == 0, markdown.stderr + latex.stderr
    lines = markdown.stdout.strip().splitlines()
    assert len(lines) == 4 and all(ln.startswith("|") and ln.endswith("|") for ln in lines)
    assert len({ln.count("|") for ln in lines}) == 1, "every row has the header's columns"
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    column = header.index("test_r2")
    cells = [[c.strip() for c in ln.strip("|").split("|")][column] for ln in lines[2:]]
    assert sum(c.startswith("**") and c.endswith("**") for c in cells) == 1, cells
    assert "plot:" not in markdown.stdout and "plot:" in markdown.stderr
    tex = latex.stdout.strip()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert tex.startswith(r"\begin{tabular}") and tex.endswith(r"\end{tabular}")
    rows = [ln for ln in tex.splitlines() if ln.endswith(r"\\")]
    assert len(rows) == 3, "a header and one row per group"
    columns = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)  # type: ignore[union-attr]
    assert all(ln.count(" & ") == len(columns) - 1 for ln in rows)
    assert r"test\_r2" in tex and tex.count(r"\mathbf") == len(header) - 2  # one best per metric
    assert tex.count("{") == tex.count("}")


def _band_pixels(png: Path, colour: str = "#1f77b4", alpha: float = 0.2) -> int:
    """Pixels of a shaded band: the colour at `alpha` over white, as matplotlib blends it."""
    from matplotlib import image
    from matplotlib.colors import to_rgb

    pixels = image.imread(str(png))[..., :3]
    blended = 1.0 - alpha * (1.0 - np.array(to_rgb(colour)))
    return int((np.abs(pixels - blended).max(axis=-1) < 4 / 255).sum())


@pytest.mark.slow  # the module's six runs of two settings
def test_compare_png_draws_each_settings_mean_with_a_shaded_band(two_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ws, _, _ = two_settings
    grouped = ws.run("compare", "--experiment_id=diabetes", f"--out={tmp_path / 'groups.png'}")
    one_each = [dirs[0] for dirs in _group_runs(ws.results).values()]
    single = ws.run("compare", *map(str, one_each), f"--out={tmp_path / 'runs.png'}")
    assert grouped.returncode == single.returncode == 0, grouped.stderr + single.stderr
    first, second = _band_pixels(tmp_path / "groups.png"), _band_pixels(tmp_path / "groups.png", "#ff7f0e")
    assert first > 10_000 and second > 10_000, "each setting's band (the bands overlap in places)"
    # one run per setting draws no band: only the lines' anti-aliased edges have such colours
    assert _band_pixels(tmp_path / "runs.png") < min(first, second) / 20


@pytest.mark.slow  # the module's six runs of two settings
def test_index_html_shows_each_setting_over_its_seeds(two_settings) -> None:  # type: ignore[no-untyped-def]
    ws, _, _ = two_settings
    assert ws.run("report", "--index").returncode == 0
    page = (ws.results / "index.html").read_text()
    table = page[page.index('<table class="groups">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 3 and table.count(" best") >= 1
    dirs = next(iter(_group_runs(ws.results).values()))
    values = np.array(_test_values(dirs, "test_r2"))
    assert f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" in table


@pytest.mark.slow
def test_a_killed_seed_resumes_when_the_command_runs_again(workspace) -> None:  # type: ignore[no-untyped-def]
    ws = workspace
    command = ("repeat", "--seeds=2", "--experiment_id=diabetes", "--epochs=3")
    killed = ws.fork(*command, env={"EXPKIT_TEST_AT": "step:20:KILL"})
    assert killed.returncode == -9, killed.stderr
    (first,) = ws.run_dirs("diabetes")
    assert json.loads((first / "run.json").read_text())["status"] == "running"  # as a kill leaves it
    again = ws.run(*command)
    assert again.returncode == 0, again.stderr
    assert "resuming it" in again.stdout and "1/2 seeds done" not in again.stdout
    dirs = ws.run_dirs("diabetes")
    assert len(dirs) == 2 and first in dirs, "the killed seed went on in its own directory"
    for d in dirs:
        assert json.loads((d / "run.json").read_text())["status"] == "finished"
        assert len(json.loads((d / "metrics.json").read_text())["final"]) and \
            (d / "history.csv").read_text().count("\n") == 4  # header + 3 epochs
    third = ws.run(*command)
    assert third.returncode == 0 and "2/2 seeds done; 0 to run" in third.stdout
    assert ws.run_dirs("diabetes") == dirs, "nothing trained again"


def test_a_named_group_keeps_one_setting(workspace) -> None:  # type: ignore[no-untyped-def]
    first = workspace.run("repeat", "--seeds=1", "--name=mine", "--experiment_id=diabetes", "--epochs=1")
    assert first.returncode == 0, first.stderr
    other = workspace.run("repeat", "--seeds=2", "--name=mine", "--experiment_id=diabetes", "--epochs=1",
                          "--lr=3e-3")
    assert other.returncode == 2 and "--name mine: that group was trained with other arguments" \
        in other.stderr.splitlines()[0], other.stderr
    assert len(workspace.run_dirs("diabetes")) == 1, "nothing trained for the refused command"


@pytest.mark.parametrize("argv, message", [
    (("repeat", *DIABETES), "--seeds is required"),
    (("repeat", "--seeds=0", *DIABETES), "--seeds: got 0"),
    (("repeat", "--seeds=two", *DIABETES), "--seeds: got 'two'"),
    (("repeat", "--seeds=1,1", *DIABETES), "distinct"),
    (("repeat", "--seeds=3", "--seed=4", *DIABETES), "--seed: repeat gives each run its seed"),
    (("repeat", "--seeds=3", "--workers=0", *DIABETES), "--workers: got '0'"),
    (("repeat", "--seeds=3", "--experiment_id=diabetes", "--lr=fast"), "--lr"),
    (("compare", "--experiment_id=diabetes", "--format=pdf"), "--format: got 'pdf'"),
    (("compare", "--experiment_id=diabetes", "--group_by="), "--group_by: needs flag names"),
])
def test_bad_repeat_and_compare_flags_are_one_line_and_write_nothing(
        workspace, argv: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    result = workspace.run(*argv)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert message in lines[0] and "Traceback" not in result.stderr
    assert not (workspace.results / "repeats").exists()
    assert not workspace.run_dirs("diabetes")


@pytest.mark.slow  # seven short runs
def test_a_seed_counts_once_a_repeat_folder_is_compared_and_equal_means_mark_no_best(
        workspace) -> None:  # type: ignore[no-untyped-def]
    """A seed-0 run made by hand before `repeat --seeds=0,1,2` is the same measurement twice:
    N is 3 (the latest run of each seed), the footer says one was set aside, and the std is
    that of the three seeds. `compare results/repeats/<name>` compares that repeat's runs. Two
    settings with the same mean: neither is starred or bold, and no Welch line is printed."""
    ws = workspace
    assert ws.run(*DIABETES, "--seed=0").returncode == 0
    assert ws.run("repeat", "--seeds=0,1,2", *DIABETES).returncode == 0
    runs = ws.run_dirs("diabetes")
    latest = runs[1:]  # the repeat's three runs: seed 0's latest run, seeds 1 and 2
    assert [json.loads((r / "config.json").read_text())["seed"] for r in runs] == [0, 0, 1, 2]
    want = stats.summarize(_test_values(latest, "test_r2"))
    done = ws.run("compare", "--experiment_id=diabetes", "--format=csv")
    assert done.returncode == 0, done.stderr
    (row,) = list(csv.DictReader(io.StringIO(done.stdout)))
    assert row["n"] == "3" and row["not_counted"] == "4 runs, 1 repeated seed: not counted"
    assert (float(row["test_r2_mean"]), float(row["test_r2_std"])) == (want.mean, want.std)
    text = ws.run("compare", "--experiment_id=diabetes").stdout
    assert "(N=3 (4 runs, 1 repeated seed: not counted))" in text and "each seed once" in text

    (folder,) = (ws.results / "repeats").iterdir()
    done = ws.run("compare", str(folder), "--format=csv")
    assert done.returncode == 0, done.stderr
    (row,) = list(csv.DictReader(io.StringIO(done.stdout)))
    assert row["n"] == "3" and row["not_counted"] == ""
    assert float(row["test_r2_mean"]) == want.mean

    # the same seeds again, as another group that differs only in --progress: equal means
    assert ws.run("repeat", "--seeds=0,1,2", "--name=again", *DIABETES, "--progress=false"
                  ).returncode == 0
    text = ws.run("compare", "--experiment_id=diabetes", "--group_by=progress").stdout
    assert "test_r2" in text and "] *" not in text and "Welch" not in text, text
    markdown = ws.run("compare", "--experiment_id=diabetes", "--group_by=progress",
                      "--format=markdown").stdout
    assert "**" not in markdown, markdown
