"""Groups of runs and their tables, recomputed by their rules on run folders written by hand
(no training, in-process, in about a second): each seed counted once (its latest finished run),
the unfinished set aside and said so, mean ± std and Student's t interval as SciPy gives them,
the best by the metric's direction among settings of N >= 2 (a tie marks none), Welch's test
and Cohen's d as SciPy gives them, and each table format."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from expkit.reports.tables import footnote, group_table, significance, summary_metrics
from expkit.rundir.groups import Group, _key, best_group, direction_of, group_runs
from expkit.rundir.results import Run, read_run
from runs import write_run

#: (lr, seed, test_acc, start): setting 0.001 has seed 0 twice (the later run counts) and a
#: killed run; 0.1 has one run, never "best" on its own however high
RUNS = [(0.001, 0, 0.60, 1), (0.001, 0, 0.80, 4), (0.001, 1, 0.82, 2), (0.001, 2, 0.85, 3),
        (0.001, 3, None, 5), (0.01, 0, 0.70, 6), (0.01, 1, 0.74, 7), (0.01, 2, 0.71, 8),
        (0.1, 0, 0.99, 9)]
COUNTED = {0.001: [0.80, 0.82, 0.85], 0.01: [0.70, 0.74, 0.71], 0.1: [0.99]}


@pytest.fixture
def selected(tmp_path: Path) -> list[Run]:
    for i, (lr, seed, acc, start) in enumerate(RUNS):
        write_run(tmp_path, f"20261201-10000{start}-{i:06x}", lr, seed, acc,
                  start_ns=start * 10**9)
    return [read_run(p) for p in sorted((tmp_path / "mnist").iterdir())]


def by_lr(groups: list[Group[Run]]) -> dict[float, Group[Run]]:
    return {g.settings["optimizer.lr"]: g for g in groups}


def test_each_seed_counts_once_and_what_is_set_aside_is_said(selected: list[Run]) -> None:
    groups = by_lr(group_runs(selected))
    assert set(groups) == {0.001, 0.01, 0.1}
    first = groups[0.001]
    assert first.n == 3 and len(first.runs) == 5
    assert sorted(first.values("test_acc")) == COUNTED[0.001], "seed 0's later run counts"
    assert first.note() == "5 runs, 1 killed, 1 repeated seed: not counted"
    assert {r.status for r in first.excluded} == {"killed", "finished"}
    assert groups[0.01].note() == "" and groups[0.01].n == groups[0.01].n_of("test_acc") == 3
    assert first.label() == "lr=0.001"
    by_seed = group_runs(selected, by=["seed"])
    assert [g.settings for g in by_seed] == [{"seed": 0}, {"seed": 1}, {"seed": 2}, {"seed": 3}]


def test_statistics_equal_scipys(selected: list[Run]) -> None:
    for lr, group in by_lr(group_runs(selected)).items():
        s = group.stats("test_acc")
        values = COUNTED[lr]
        assert s is not None and s.n == len(values)
        assert s.mean == pytest.approx(float(np.mean(values)), rel=1e-12)
        if len(values) < 2:
            assert math.isnan(s.std) and math.isnan(s.low)
            continue
        assert s.std == pytest.approx(float(np.std(values, ddof=1)), rel=1e-12)
        low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                           scale=scipy_stats.sem(values))
        assert (s.low, s.high) == pytest.approx((low, high), rel=1e-9)
        assert s.half_width == pytest.approx((high - low) / 2, rel=1e-9)
    assert by_lr(group_runs(selected))[0.001].stats("nope") is None


def test_the_best_follows_the_direction_needs_two_runs_and_a_tie_marks_none(
        selected: list[Run]) -> None:
    groups = group_runs(selected)
    lrs = [g.settings["optimizer.lr"] for g in groups]
    assert direction_of("test_acc", selected) == "max"
    assert direction_of("best_val_loss", selected) == "min"
    assert direction_of("final_val_acc", selected) == "max"
    assert direction_of("test_unknown", selected) is None
    assert lrs[best_group(groups, "test_acc", "max")] == 0.001  # type: ignore[index]
    assert lrs[best_group(groups, "test_acc", "min")] == 0.01  # type: ignore[index]
    assert best_group(groups, "test_acc", "report") is None
    assert best_group(groups, "test_acc", None) is None
    assert best_group(groups[:1], "test_acc", "max") is None
    twin = Group({"x": 1}, groups[0].runs)  # the same runs: the same mean
    assert best_group([groups[0], twin, groups[1]], "test_acc", "max") is None
    assert best_group([groups[1], twin], "test_acc", "min") == 0


def test_the_tables_say_the_numbers_and_mark_the_best(selected: list[Run]) -> None:
    groups = group_runs(selected)
    metrics = summary_metrics(selected)
    assert metrics == ["best_val_loss", "best_val_acc", "test_acc"]
    s = {g.settings["optimizer.lr"]: g.stats("test_acc") for g in groups}
    text = group_table(groups, metrics).splitlines()
    assert text[0].split() == ["metric", "lr=0.001", "(N=3", "(5", "runs,", "1", "killed,", "1",
                               "repeated", "seed:", "not", "counted))", "lr=0.01", "(N=3)",
                               "lr=0.1", "(N=1)"]
    row = next(line for line in text if line.startswith("test_acc"))
    a, b = s[0.001], s[0.01]
    assert row.split("  ")[0] == "test_acc"
    assert f"{a.mean:.4f} ± {a.std:.4f} [{a.low:.4f}, {a.high:.4f}] *" in row
    assert f"{b.mean:.4f} ± {b.std:.4f} [{b.low:.4f}, {b.high:.4f}]" in row
    assert row.rstrip().endswith("0.9900"), "one run: its value, no spread, never starred"
    markdown = group_table(groups, metrics, "markdown").splitlines()
    assert markdown[0] == "| lr | N | best_val_loss | best_val_acc | test_acc |"
    assert markdown[2].endswith(f"| **{a.mean:.4f} ± {a.std:.4f}** |")
    assert markdown[3].endswith(f"| {b.mean:.4f} ± {b.std:.4f} |")
    assert markdown[4] == "| 0.1 | 1 | 0.3667 | 0.9000 | 0.9900 |"
    latex = group_table(groups, metrics, "latex")
    assert rf"$\mathbf{{{a.mean:.4f} \pm {a.std:.4f}}}$" in latex and r"\hline" in latex
    rows = list(csv.DictReader(io.StringIO(group_table(groups, metrics, "csv"))))
    assert rows[0]["n"] == "3" and rows[0]["not_counted"] == "5 runs, 1 killed, 1 repeated seed: not counted"
    assert float(rows[0]["test_acc_mean"]) == a.mean and float(rows[0]["test_acc_ci_low"]) == a.low
    assert rows[2]["test_acc_std"] == "" and rows[2]["test_acc_n"] == "1"
    html = group_table(groups, metrics, "html")
    assert f'<td class="num best" title="95% CI [{a.low:.4f}, {a.high:.4f}]">' in html
    assert "each seed once" in footnote() and "each seed once" in footnote("html")


def test_welch_lines_equal_scipys_for_the_best_against_each_other(selected: list[Run]) -> None:
    groups = group_runs(selected)
    lines = significance(groups, ["test_acc"])
    assert len(lines) == 1, "the one-run setting is not tested"
    a, b = COUNTED[0.001], COUNTED[0.01]
    test = scipy_stats.ttest_ind(a, b, equal_var=False)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    d = (np.mean(a) - np.mean(b)) / math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    assert lines[0] == (f"test_acc: lr=0.001 vs lr=0.01: {np.mean(a) - np.mean(b):+.4f} (Welch's t "
                        f"{test.statistic:.2f}, df {df:.1f}, p {test.pvalue:.3g}; Cohen's d {d:.2f})")


def test_setting_keys_tell_values_apart_as_json_does() -> None:
    assert len({_key({"x": 1}), _key({"x": 1.0}), _key({"x": True}), _key({"x": "1"})}) == 4
    assert _key({"x": [1, 2], "y": None}) == _key({"y": None, "x": [1, 2]})
    assert _key({"x": math.nan}) == _key({"x": math.nan}), "NaN is one value"
    assert _key({"x": {"a": 1, "b": 2}}) == _key({"x": {"b": 2, "a": 1}}), "a dict's order is not a value"
    assert json.loads(json.dumps(1.0)) == 1  # (why the type is part of the key)


def test_what_is_set_aside_is_counted_for_each_reason(tmp_path: Path) -> None:
    """Two earlier runs of one seed and a killed run: 4 runs, 1 killed, 2 repeated seeds."""
    for i, (seed, acc) in enumerate([(1, 0.5), (1, 0.6), (1, 0.7), (2, 0.8), (3, None)]):
        write_run(tmp_path, f"20261201-10000{i}-{i:06x}", 0.01, seed, acc, start_ns=i * 10**9)
    (group,) = group_runs([read_run(p) for p in sorted((tmp_path / "mnist").iterdir())])
    assert group.n == 2 and sorted(group.values("test_acc")) == [0.7, 0.8]
    assert group.note() == "5 runs, 1 killed, 2 repeated seeds: not counted"


def test_two_settings_the_flags_that_differ_and_welch_from_two_runs(tmp_path: Path) -> None:
    """Two settings (two learning rates, one with two runs): lr is the setting shown, by its
    flag's name (run.json's flags map a nested key to its flag), the best needs no tie-break,
    and Welch's test runs from two values a side."""
    values = {0.1: [0.9, 0.92, 0.95], 0.2: [0.7, 0.75]}
    k = 0
    for lr, accs in values.items():
        for seed, acc in enumerate(accs):
            run = write_run(tmp_path, f"20261201-10000{k}-{k:06x}", lr, seed, acc, start_ns=k * 10**9)
            record = json.loads((run / "run.json").read_text())
            (run / "run.json").write_text(json.dumps({**record, "flags": {"optimizer.lr": "rate"}}))
            k += 1
    runs = [read_run(p) for p in sorted((tmp_path / "mnist").iterdir())]
    groups = group_runs(runs)
    assert [g.settings for g in groups] == [{"optimizer.lr": 0.1}, {"optimizer.lr": 0.2}]
    assert groups[0].label() == "rate=0.1"
    assert group_table(groups, ["test_acc"], "markdown").splitlines()[0] == "| rate | N | test_acc |"
    assert best_group(groups, "test_acc", "max") == 0
    assert best_group([groups[0], Group({}, groups[1].runs[:1])], "test_acc", "max") == 0, \
        "the only setting of N >= 2 is the best"
    (line,) = significance(groups, ["test_acc"])
    test = scipy_stats.ttest_ind(values[0.1], values[0.2], equal_var=False)
    assert f"Welch's t {test.statistic:.2f}" in line and f"p {test.pvalue:.3g}" in line
    other = write_run(tmp_path.parent / "b", "20261201-100009-000009", 0.3, 0, 0.5)
    record = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**record, "experiment_id": "other"}))
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "experiment_id": "other",
                                                   "model": {"hidden_sizes": [8]}}))
    mixed = group_runs([*runs, read_run(other)])
    assert list(mixed[0].settings) == ["experiment_id", "optimizer.lr", "model.hidden_sizes"], \
        "which experiment comes first"


def test_a_direction_from_the_monitor_when_none_is_declared(tmp_path: Path) -> None:
    run = write_run(tmp_path, "20261201-100000-000000", 0.1, 0, 0.9)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["directions"]
    (run / "metrics.json").write_text(json.dumps({**metrics, "monitor": "val_acc", "mode": "max"}))
    assert direction_of("test_acc", [read_run(run)]) == "max"
    assert direction_of("best_val_loss", [read_run(run)]) == "min", "a loss is lower-better"
    assert direction_of("test_f1", [read_run(run)]) is None


def test_t_quantiles_refuse_a_probability_outside_zero_to_one() -> None:
    from expkit.utils.stats import t_quantile

    for p in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError):
            t_quantile(p, 5)
    assert t_quantile(0.975, 4) == pytest.approx(scipy_stats.t.ppf(0.975, 4), rel=1e-9)
