"""Reproduce: re-run a run's recorded config into a new run directory and compare, metric by metric."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from expkit.config.args import flag_table
from expkit.config.machine import load_machine_config
from expkit.config.registry import Registry
from expkit.engine.resume import read_run_config
from expkit.engine.runner import execute
from expkit.errors import ExpkitError
from expkit.rundir.dirs import RunRecord
from expkit.rundir.provenance import environment, git_state
from expkit.rundir.results import wall_clock
from expkit.utils.console import Console


def comparable_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The final, best and test values (and best epoch or step) of a metrics.json, flat; no timings."""
    flat: dict[str, float] = {}
    for part in ("final", "best", "test"):
        for name, value in (metrics.get(part) or {}).items():
            if not wall_clock(name):
                flat[name if part == "test" else f"{part}.{name}"] = value
    for key in ("best_epoch", "epochs_run", "best_step", "steps_run"):
        if metrics.get(key) is not None:
            flat[key] = metrics[key]
    return flat


def drift_warnings(record: dict[str, Any], code_folder: Path) -> list[str]:
    """What differs now from when the run was recorded: code (commit, diff) and versions."""
    warnings = []
    code, _ = git_state(code_folder)
    before = record.get("code") or {}
    if before.get("commit") != code.get("commit"):
        warnings.append(f"code: recorded commit {before.get('commit')}, now {code.get('commit')}")
    elif before.get("diff_sha256") != code.get("diff_sha256"):
        warnings.append("code: uncommitted changes differ from the recorded code.diff")
    env, then = environment(), record.get("environment") or {}
    for key in ("python", "torch", "numpy", "cuda"):
        if key in then and then[key] != env[key]:
            warnings.append(f"{key}: recorded {then[key]}, now {env[key]}")
    return warnings


def reproduce_run(run_dir: Path, tolerance: float, registry: Registry, prog: str) -> int:
    """Exit 0 when every compared metric matches (within `tolerance`), 1 otherwise."""
    run_dir = Path(run_dir).absolute()
    config = read_run_config(run_dir)
    try:
        recorded = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        raise ExpkitError(f"{run_dir}: has no metrics.json (the run did not finish); resume it "
                          f"with `{prog} resume {run_dir}` instead") from None
    experiment_cls = registry.load(config["experiment_id"])
    args = experiment_cls.args_class.model_validate(config)
    console = Console()
    experiment = experiment_cls(args, load_machine_config(announce=console.print), console)
    for warning in drift_warnings(RunRecord(run_dir).read(),
                                  Path(inspect.getfile(experiment_cls)).parent):
        console.print(f"warning: {warning}")
    code = execute(experiment, argv=["reproduce", str(run_dir)],
                   sources={".".join(f.path): f"{run_dir.name}/config.json"
                            for f in flag_table(experiment_cls.args_class).values()},
                   extra_record={"reproduces": str(run_dir)})
    new_dir = experiment.run_dir
    if code != 0 or new_dir is None:
        return code
    now_metrics = json.loads((new_dir / "metrics.json").read_text())
    old, new = comparable_metrics(recorded), comparable_metrics(now_metrics)
    rows = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        same = a == b or (isinstance(a, int | float) and isinstance(b, int | float)
                          and abs(a - b) <= tolerance)
        rows.append((name, a, b, same))
    width = max(len(name) for name, *_ in rows)
    console.print(f"{'metric'.ljust(width)}  {'recorded':>12}  {'reproduced':>12}  result")
    for name, a, b, same in rows:
        console.print(f"{name.ljust(width)}  {_fmt(a):>12}  {_fmt(b):>12}  "
                      f"{'match' if same else 'differs'}")
    differs = [name for name, _, _, same in rows if not same]
    RunRecord(new_dir).update(reproduction={"of": str(run_dir), "tolerance": tolerance,
                                            "all_match": not differs, "differs": differs})
    console.print(f"reproduction of {run_dir.name}: " + (
        f"{len(differs)} of {len(rows)} metrics differ" if differs else "every metric matches"))
    return 1 if differs else 0


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
