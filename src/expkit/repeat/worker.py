"""A repeat's worker: trains its share of a group's seeds, one after the other, each a fresh
run that records its group (run.json `group`) or the resume of a stopped one.

`expkit repeat` runs the tasks itself with one worker, or starts K of these processes
(`python -m expkit.repeat.worker PAYLOAD`), each printing one line per seed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from expkit.config.parsing import parse_argv
from expkit.config.registry import Registry
from expkit.errors import ExpkitError, report


def run_tasks(tasks: list[dict[str, Any]], payload: dict[str, Any], registry: Registry,
              quiet: bool) -> int:
    """Run each task ({"seed": S} or {"seed": S, "resume": RUN_DIR}); stops at a stop signal.
    Returns the worst exit code."""
    from expkit.config.machine import load_machine_config
    from expkit.engine.resume import resume_run
    from expkit.engine.runner import execute
    from expkit.utils.console import Console

    prog, argv = payload["prog"], list(payload["argv"])
    worst = 0
    for task in tasks:
        seed = int(task["seed"])
        if "resume" in task:
            code = resume_run(Path(task["resume"]), [], registry, prog)
            where: str = task["resume"]
        else:
            run_argv = [*argv, f"--seed={seed}"]
            experiment_cls = registry.load(payload["config"]["experiment_id"])
            # the validated arguments of the command, with this seed (a --config FILE is read once)
            args = parse_argv(experiment_cls.args_class, [f"--seed={seed}"], prog,
                              base=payload["config"])
            sources = {**payload["sources"], "seed": "cli"}
            console = Console()
            console.quiet = quiet
            experiment = experiment_cls(args, load_machine_config(announce=lambda _: None), console)
            try:
                code = execute(experiment, argv=run_argv, sources=sources,
                               extra_record={"group": {"name": payload["group"], "seed": seed}})
            except ExpkitError as e:
                print(f"seed {seed}: failed: {e}", flush=True)
                code = 1
            where = str(experiment.run_dir or "")
        if quiet:
            print(f"seed {seed}: {'finished' if code == 0 else f'exit code {code}'}  {where}", flush=True)
        worst = max(worst, code)
        if code in (130, 143):  # asked to stop: the rest waits for the next `repeat`
            return code
    return worst


def main(payload_text: str) -> int:
    """Entry point of a worker process: the payload `expkit repeat` gave it."""
    payload = json.loads(payload_text)
    registry = (Registry.from_module(payload["registry"]) if payload.get("registry")
                else Registry.from_entry_points())
    try:
        return run_tasks(payload["tasks"], payload, registry, quiet=True)
    except Exception as e:  # one line, as the command line would print it
        return report(e, payload.get("prog", "expkit"))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
