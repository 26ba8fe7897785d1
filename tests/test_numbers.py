"""Numbers a researcher reports: a group's N is the number of values its statistics come from
(unfinished runs are named, never averaged, and one run is never "best" on its own), and the
newest run is the one that started last, also within one second. The run directories are
written as expkit writes them (config.json, run.json, metrics.json, history.csv) and read
through the real entry points: `expkit compare`, `expkit list`, `expkit.runs()`, index.html."""

from __future__ import annotations

import csv
import io

import pytest
import scipy.stats

import expkit
from conftest import Workspace
from runs import write_run


@pytest.fixture
def seeds(workspace: Workspace) -> dict[float, list[float | None]]:
    """Three settings of three seeds each: lr=0.01 has one killed seed, lr=0.003 two (its one
    finished run has the highest test_acc of all), lr=0.001 none."""
    plan: dict[float, list[float | None]] = {0.01: [0.91, 0.93, None], 0.003: [0.99, None, None],
                                             0.001: [0.88, 0.89, 0.87]}
    for k, (lr, values) in enumerate(plan.items()):
        for seed, value in enumerate(values):
            write_run(workspace.results, f"20261201-10000{k}-{seed:06x}", lr, seed, value)
    return plan


def test_a_group_counts_only_the_runs_its_numbers_come_from(
        workspace: Workspace, seeds: dict[float, list[float | None]]) -> None:
    done = workspace.cli("compare", "--experiment_id=mnist", "--format=csv")
    assert done.returncode == 0, done.stderr
    rows = {float(r["lr"]): r for r in csv.DictReader(io.StringIO(done.stdout))}
    assert set(rows) == set(seeds)
    for lr, planned in seeds.items():
        values = [v for v in planned if v is not None]
        row = rows[lr]
        killed = len(planned) - len(values)
        assert int(row["n"]) == len(values) and int(row["test_acc_n"]) == len(values)
        assert row["not_counted"] == (f"{len(planned)} runs, {killed} killed: not counted"
                                      if killed else "")
        assert float(row["test_acc_mean"]) == pytest.approx(sum(values) / len(values), rel=1e-12)
        if len(values) > 1:  # the interval uses t with N-1 degrees of freedom, N = values
            low, high = scipy.stats.t.interval(0.95, len(values) - 1, loc=scipy.stats.tmean(values),
                                               scale=scipy.stats.sem(values))
            assert float(row["test_acc_ci_low"]) == pytest.approx(low, rel=1e-9)
            assert float(row["test_acc_ci_high"]) == pytest.approx(high, rel=1e-9)
        else:
            assert row["test_acc_ci_low"] == row["test_acc_ci_high"] == row["test_acc_std"] == ""


def test_one_run_is_never_best_on_its_own(workspace: Workspace,
                                          seeds: dict[float, list[float | None]]) -> None:
    text = workspace.cli("compare", "--experiment_id=mnist")
    assert text.returncode == 0, text.stderr
    header = next(line for line in text.stdout.splitlines() if line.startswith("metric "))
    assert "lr=0.01 (N=2 (3 runs, 1 killed: not counted))" in header
    assert "lr=0.003 (N=1 (3 runs, 2 killed: not counted))" in header
    assert "lr=0.001 (N=3)" in header
    test_row = next(line for line in text.stdout.splitlines() if line.startswith("test_acc "))
    starred = [cell.strip() for cell in test_row.split("  ") if cell.endswith(" *")]
    # 0.99 from one run is the highest mean, but the best is the best of those with N >= 2
    assert len(starred) == 1 and starred[0].startswith("0.9200 ± "), test_row
    assert "0.9900 *" not in test_row and "N >= 2" in text.stdout
    markdown = workspace.cli("compare", "--experiment_id=mnist", "--format=markdown").stdout
    # best_val_acc and test_acc have one best each; best_val_loss is a tie (0.3667 in both
    # settings of N >= 2): neither is marked
    assert markdown.count("**") == 2 * 2 and "**0.3667" not in markdown
    assert "| 1 (3 runs, 2 killed: not counted) |" in markdown and "**0.99" not in markdown


def test_runs_aggregate_and_the_index_say_the_same(workspace: Workspace,
                                                   seeds: dict[float, list[float | None]]) -> None:
    by_lr = {row["lr"]: row for row in expkit.runs(workspace.results).aggregate(by=["lr"])}
    assert by_lr[0.01]["n"] == 2 and by_lr[0.01]["test_acc_n"] == 2
    assert len(by_lr[0.01]["runs"]) == 2 and len(by_lr[0.01]["excluded"]) == 1
    assert by_lr[0.01]["excluded"][0].endswith("(killed)")
    assert by_lr[0.003]["n"] == 1 and by_lr[0.003]["test_acc_mean"] == 0.99
    done = workspace.cli("report", "--index")
    assert done.returncode == 0, done.stderr
    page = (workspace.results / "index.html").read_text()
    table = page[page.index('<table class="groups">'):]
    assert "<td class=num>2 (3 runs, 1 killed: not counted)</td>" in table
    assert "<td class=num>1 (3 runs, 2 killed: not counted)</td>" in table
    assert "95% CI []" not in page
    # one per metric but best_val_loss (a tie), never the N=1 group's
    assert table.count('class="num best"') == 2


def test_the_newest_run_is_the_one_that_started_last(workspace: Workspace) -> None:
    # two runs in one second: the later one's random id sorts first by name
    first = write_run(workspace.results, "20261201-100000-ffffff", 0.01, 0, 0.9,
                      start_ns=1_764_583_200_100_000_000)
    second = write_run(workspace.results, "20261201-100000-000000", 0.02, 1, 0.8,
                       start_ns=1_764_583_200_600_000_000)
    assert [r.path for r in expkit.runs(workspace.results)] == [first, second]
    assert workspace.run_dirs() == [first, second]
    listing = workspace.cli("list").stdout.splitlines()
    assert second.name in listing[1] and first.name in listing[2]
    last = workspace.cli("compare", "--experiment_id=mnist", "--last=1")
    assert last.returncode == 0, last.stderr
    assert second.name in last.stdout and first.name not in last.stdout
