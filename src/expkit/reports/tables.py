"""Tables of settings over seeds, for people and for papers: per group of runs (one setting,
several seeds) N and each metric as mean ± std with its 95% confidence interval (Student's t),
the best group per metric marked by the metric's direction; as text, Markdown, LaTeX, CSV or
HTML. And Welch's t test between the best group and each other one.
"""

from __future__ import annotations

import csv
import io
import math
from html import escape

from expkit.rundir.groups import MIN_N_FOR_BEST, Group, best_group, direction_of
from expkit.rundir.results import Run
from expkit.rundir.values import as_typed, flag_of
from expkit.utils.stats import LEVEL, welch

FORMATS = ("text", "markdown", "latex", "csv")
#: the summary metrics a table of settings shows: the best epoch's val, and the test
METRIC_PREFIXES = ("best_val", "test_")


def summary_metrics(selected: list[Run]) -> list[str]:
    """The summary metrics (best_val_*, test_*) any of the runs has, in order."""
    return list(dict.fromkeys(k for r in selected for k in r.summary()
                              if k.startswith(METRIC_PREFIXES)))


def _cells(group: Group[Run], metrics: list[str], best: dict[str, int | None], index: int
           ) -> list[tuple[str, str, str, bool]]:
    """Per metric: (mean, std, interval, is best) as text, 4 decimals; '' where unknown. A mean
    computed from fewer values than the group's N says from how many: "0.8710 (N=2)"."""
    out = []
    for metric in metrics:
        s = group.stats(metric)
        if s is None:
            out.append(("", "", "", False))
            continue
        std = "" if math.isnan(s.std) else f"{s.std:.4f}"
        interval = "" if math.isnan(s.low) else f"{s.low:.4f}, {s.high:.4f}"
        mean = f"{s.mean:.4f}" + (f" (N={s.n})" if s.n != group.n else "")
        out.append((mean, std, interval, best[metric] == index))
    return out


def n_cell(group: Group[Run]) -> str:
    """The group's N, and what was left out: "2 (3 runs, 1 killed: not counted)"."""
    note = group.note()
    return f"{group.n} ({note})" if note else str(group.n)


def group_table(groups: list[Group[Run]], metrics: list[str], fmt: str = "text") -> str:
    """The table of `groups` in `fmt` (markdown, latex, csv, html): a row per group with its
    settings, N and each metric's mean ± std; markdown, LaTeX and HTML put the best in bold,
    CSV gives every number in full (and the 95% interval). `text`, for a terminal: a row per
    metric, a column per group, the 95% interval in brackets and the best starred. N counts the
    finished runs the numbers come from; the others are named beside it ("1 killed: not
    counted")."""
    selected = [r for g in groups for r in g.runs]
    best = {m: best_group(groups, m, direction_of(m, selected)) for m in metrics}
    settings = list(groups[0].settings) if groups else []
    record = groups[0].runs[0].record if groups else {}
    names = [flag_of(k, record) for k in settings]
    rows = [([_value(g.settings.get(k)) for k in settings] or [g.label()], n_cell(g),
             _cells(g, metrics, best, i)) for i, g in enumerate(groups)]
    names = names or ["setting"]
    if fmt == "csv":
        return _csv(groups, metrics, names, settings)
    if fmt == "markdown":
        lines = ["| " + " | ".join([*names, "N", *metrics]) + " |",
                 "|" + "---|" * len(names) + "--:|" + ":-:|" * len(metrics)]
        for values, n, cells in rows:
            shown = [_pm(mean, std, "{} ± {}", "**{}**" if top else "{}") for mean, std, _, top in cells]
            lines.append("| " + " | ".join([*values, n, *shown]) + " |")
        return "\n".join(lines)
    if fmt == "latex":
        lines = [r"\begin{tabular}{" + "l" * len(names) + "r" + "c" * len(metrics) + "}", r"\hline",
                 " & ".join(_tex(c) for c in [*names, "N", *metrics]) + r" \\", r"\hline"]
        for values, n, cells in rows:
            shown = [_pm(mean, std, r"{} \pm {}", r"$\mathbf{{{}}}$" if top else "${}$")
                     for mean, std, _, top in cells]
            lines.append(" & ".join([*(_tex(v) for v in values), _tex(n), *shown]) + r" \\")
        lines += [r"\hline", r"\end{tabular}"]
        return "\n".join(lines)
    if fmt == "html":
        head = "".join(f"<th>{escape(c)}</th>" for c in [*names, "N", *metrics])
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in values) + f"<td class=num>{escape(n)}</td>"
            + "".join(f'<td class="num{" best" if top else ""}"'
                      + (f' title="95% CI [{interval}]"' if interval else "") + ">"
                      f"{escape(_pm(mean, std, '{} ± {}', '{}'))}</td>" if mean else "<td></td>"
                      for mean, std, interval, top in cells) + "</tr>" for values, n, cells in rows)
        return f'<table class="groups"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    # text: a row per metric and a column per group, so that a terminal holds many metrics
    header = ["metric", *(f"{g.label()} (N={n})" for g, (_, n, _) in zip(groups, rows, strict=True))]
    text_rows = [[metric, *(_pm(mean, std, "{} ± {}", "{}") + (f" [{interval}]" if interval else "")
                            + (" *" if top else "") for mean, std, interval, top in
                            (cells[k] for _, _, cells in rows))] for k, metric in enumerate(metrics)]
    widths = [max(len(row[i]) for row in [header, *text_rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *text_rows])


def footnote(fmt: str = "text") -> str:
    """What the table's numbers are (text: the interval in brackets, the best starred; html:
    the interval on hover, the best in bold)."""
    interval = (f"{LEVEL:.0%} confidence interval of the mean (Student's t, N-1 degrees of "
                "freedom)")
    best = (f"the best by the metric's direction, among settings with N >= {MIN_N_FOR_BEST} (one "
            "run's value is never marked best)")
    if fmt == "html":
        return f"mean ± std over each setting's finished runs, each seed once (N); hover a " \
               f"value for its {interval}; bold: {best}"
    return f"mean ± std over each setting's finished runs, each seed once (N) [{interval}]; " \
           f"* {best}"


def _value(value: object) -> str:
    """A setting's value, spelled as the text table and the command line spell it (None:
    auto)."""
    return as_typed(value)


def _pm(mean: str, std: str, both: str, outer: str) -> str:
    """`mean ± std` (or the mean alone, for one run) wrapped in `outer`."""
    if not mean:
        return ""
    return outer.format(both.format(mean, std) if std else mean)


def _tex(text: str) -> str:
    """Text escaped for LaTeX (a flag name's underscores, a value's specials)."""
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                          ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"),
                          ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")):
        text = text.replace(char, escaped)
    return text


def _csv(groups: list[Group[Run]], metrics: list[str], names: list[str], settings: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*names, "n", "not_counted", *(f"{m}_{part}" for m in metrics
                                                   for part in ("n", "mean", "std", "ci_low", "ci_high"))])
    for g in groups:
        numbers: list[str] = []
        for metric in metrics:
            s = g.stats(metric)
            numbers += ["0", "", "", "", ""] if s is None else [str(s.n)] + [
                repr(x) if not math.isnan(x) else "" for x in (s.mean, s.std, s.low, s.high)]
        writer.writerow([*([_value(g.settings.get(k)) for k in settings] or [g.label()]), g.n,
                         g.note(), *numbers])
    return buffer.getvalue().rstrip("\n")


def significance(groups: list[Group[Run]], metrics: list[str]) -> list[str]:
    """Per metric, Welch's t test of the best group against each other group (both with two
    runs or more): the difference, t, degrees of freedom, p-value and Cohen's d."""
    selected = [r for g in groups for r in g.runs]
    lines = []
    for metric in metrics:
        top = best_group(groups, metric, direction_of(metric, selected))
        if top is None:
            continue
        for i, other in enumerate(groups):
            a, b = groups[top].values(metric), other.values(metric)
            if i == top or len(a) < 2 or len(b) < 2:
                continue
            w = welch(a, b)
            lines.append(f"{metric}: {groups[top].label()} vs {other.label()}: {w.difference:+.4f} "
                         f"(Welch's t {w.t:.2f}, df {w.df:.1f}, p {w.p:.3g}; Cohen's d {w.d:.2f})")
    return lines
