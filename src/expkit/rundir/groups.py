"""Runs of one setting as a group: every argument but the seed (and how a run was recorded)
alike, or the same `by` flags; each metric's mean, std and Student's t interval over a group's
finished runs, the direction a metric improves in, and the best group among several."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from expkit.rundir.dirs import start_order
from expkit.rundir.values import as_typed, flag_of
from expkit.utils.stats import Summary, summarize


class Member(Protocol):
    """What grouping reads of a run (expkit.rundir.results.Run is the one implementation)."""

    path: Path
    config: dict[str, Any]
    record: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def status(self) -> str:
        """running, finished, ..."""

    @property
    def experiment_id(self) -> str:
        """The experiment that made it."""

    @property
    def flat_config(self) -> dict[str, Any]:
        """The config with dotted keys."""

    def get(self, key: str, default: Any = None) -> Any:
        """A config value by dotted path or by its last part."""

    def summary(self) -> dict[str, float]:
        """Final, best and test values."""


M = TypeVar("M", bound=Member)


#: config keys (by last part) that say how a run was recorded, not what it trained: runs that
#: differ only in these (and the seed) are repeats of one setting
NOT_SETTINGS = frozenset({"seed", "use_wandb", "use_tensorboard", "use_mlflow",
                          "mlflow_log_checkpoints", "save_checkpoints", "progress"})
_SPLIT_PREFIXES = ("best_", "final_")
_SPLITS = ("train_", "val_", "test_")


def _setting_keys(run: Member) -> dict[str, Any]:
    return {k: v for k, v in run.flat_config.items() if _is_setting(k)}


@lru_cache(maxsize=4096)
def _is_setting(key: str) -> bool:
    return key.rsplit(".", 1)[-1] not in NOT_SETTINGS


@dataclass
class Group(Generic[M]):
    """Runs of one setting (the same arguments but the seed, or the same `by` flags): each
    metric of their summaries as mean, std and a Student's t interval (`stats`).

    Only finished runs count: a run that is still running, was killed, stopped or failed has
    no final numbers, so it is listed (`excluded`, `note`) but never averaged. N is the number
    of values a statistic was computed from: `n` runs in all, `n_of(metric)` per metric."""

    settings: dict[str, Any]  # dotted key -> value: what tells this group from the others
    runs: list[M]
    _stats: dict[str, Summary | None] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def statuses(self) -> list[str]:
        """Each run's status, as seen once when the group is first asked (a table shows one
        moment)."""
        return [r.status for r in self.runs]

    @cached_property
    def counted(self) -> list[M]:
        """The runs whose numbers count: the finished ones, each seed once (its latest finished
        run: a seed run twice is one measurement, not two)."""
        latest: dict[Any, M] = {}
        unseeded: list[M] = []
        for run, status in sorted(zip(self.runs, self.statuses, strict=True),
                                  key=lambda rs: start_order(rs[0].record, rs[0].path)):
            if status != "finished":
                continue
            seed = run.get("seed")
            if seed is None:
                unseeded.append(run)
            else:
                latest[seed] = run  # a later run of the seed replaces an earlier one
        keep = {id(r) for r in [*latest.values(), *unseeded]}
        return [r for r in self.runs if id(r) in keep]

    @property
    def excluded(self) -> list[M]:
        """The runs left out of the statistics: not finished, or an earlier run of a seed."""
        kept = {id(r) for r in self.counted}
        return [r for r in self.runs if id(r) not in kept]

    @property
    def n(self) -> int:
        """How many runs the statistics are computed from (the finished ones, a seed once)."""
        return len(self.counted)

    def n_of(self, metric: str) -> int:
        """How many values the metric's statistics are computed from."""
        return len(self.values(metric))

    def note(self) -> str:
        """What was left out, e.g. "4 runs, 1 killed, 1 repeated seed: not counted" ("" when
        nothing was)."""
        if not self.excluded:
            return ""
        statuses: dict[str, int] = {}
        for status in self.statuses:
            if status != "finished":
                statuses[status] = statuses.get(status, 0) + 1
        repeated = len(self.excluded) - sum(statuses.values())
        if repeated:
            statuses[f"repeated seed{'s' if repeated > 1 else ''}"] = repeated
        left = ", ".join(f"{k} {s}" for s, k in statuses.items())
        return f"{len(self.runs)} runs, {left}: not counted"

    def label(self) -> str:
        """The group's settings by flag name ("lr=0.01, batch_size=64"), or its experiment's id
        when one setting is all there is."""
        record = self.runs[0].record
        return ", ".join(f"{flag_of(k, record)}={as_typed(v)}" for k, v in self.settings.items()) \
            or self.runs[0].experiment_id

    def values(self, metric: str) -> list[float]:
        """The metric's value in each counted run that has it (summary names: test_acc,
        best_val_loss)."""
        return [s[metric] for s in (r.summary() for r in self.counted) if metric in s]

    def stats(self, metric: str) -> Summary | None:
        """Mean, std and 95% interval of the metric over the group's counted runs (None: no
        counted run has it; std and interval NaN for one value)."""
        if metric not in self._stats:
            values = self.values(metric)
            self._stats[metric] = summarize(values) if values else None
        return self._stats[metric]


_PLAIN = (str, int, float, bool, type(None))


def _key(setting: dict[str, Any]) -> tuple[tuple[str, str, Any], ...]:
    """A setting as a hashable key that tells values apart as JSON does (1, 1.0 and true are
    three values): each value with its type; lists and dicts as sorted JSON."""
    return tuple(sorted((k, type(v).__name__, v if isinstance(v, _PLAIN) and v == v  # not NaN
                         else json.dumps(v, sort_keys=True, default=str))
                        for k, v in setting.items()))


def group_runs(selected: Sequence[M], by: list[str] | None = None) -> list[Group[M]]:
    """The runs grouped by every argument but the seed (and NOT_SETTINGS), or by the flags `by`
    (flag names or dotted keys), in order of first appearance. A group's `settings` are the keys
    whose values differ between groups (or the `by` flags)."""
    missing = object()
    buckets: dict[tuple[tuple[str, str, Any], ...], list[M]] = {}
    keys: dict[tuple[tuple[str, str, Any], ...], dict[str, Any]] = {}
    for run in selected:
        setting = ({flag: run.get(flag, missing) for flag in by} if by is not None
                   else _setting_keys(run))
        # a key an older run's config lacks is the same setting as the key set to null
        key = _key({k: v for k, v in setting.items() if v is not missing and v is not None})
        buckets.setdefault(key, []).append(run)
        keys.setdefault(key, setting)
    if by is not None:
        shown = list(by)
    else:
        flats = list(keys.values())
        names = list(dict.fromkeys(k for flat in flats for k in flat))
        shown = [k for k in names if k != "experiment_id"
                 and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
        if len({r.experiment_id for r in selected}) > 1:
            shown.insert(0, "experiment_id")
    return [Group({k: (None if keys[key].get(k, missing) is missing else keys[key].get(k))
                   for k in shown}, runs) for key, runs in buckets.items()]


def direction_of(metric: str, selected: Sequence[Member]) -> str | None:
    """"max" or "min": which way is better for a summary metric (test_acc, best_val_loss), as
    the runs' metrics.json recorded their experiment's declaration; None when unknown."""
    name = metric
    for prefix in _SPLIT_PREFIXES:
        name = name.removeprefix(prefix)
    base = name
    for prefix in _SPLITS:
        base = base.removeprefix(prefix)
    for run in selected:
        declared = run.metrics.get("directions") or {}
        if base in declared:
            return str(declared[base])
        monitor = str(run.metrics.get("monitor") or "")
        if monitor and monitor.split("_", 1)[-1] == base and run.metrics.get("mode"):
            return str(run.metrics["mode"])
    return "min" if base == "loss" else None


#: a group's mean is marked best only when it comes from this many values or more
MIN_N_FOR_BEST = 2


def best_group(groups: Sequence[Group[Any]], metric: str, direction: str | None) -> int | None:
    """The index of the group with the best mean of `metric` among the groups whose mean comes
    from MIN_N_FOR_BEST values or more (None: fewer than two groups, no direction, a metric
    declared for reporting only, no such group, or a tie for the best mean): one run's value
    is never "best" on its own, and of two equal means neither is."""
    if direction not in ("max", "min") or len(groups) < 2:
        return None
    means = [(s.mean, i) for i, g in enumerate(groups)
             if (s := g.stats(metric)) is not None and s.n >= MIN_N_FOR_BEST]
    if not means:
        return None
    ranked = sorted(means, reverse=direction == "max")
    if len(ranked) > 1 and math.isclose(ranked[0][0], ranked[1][0], rel_tol=1e-12, abs_tol=1e-15):
        return None
    return ranked[0][1]
