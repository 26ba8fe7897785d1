"""One run from validated args to a finished run directory; also the continuation of a
resume: `execute`, the phases of `expkit.engine.phases` in their order. The command line
(`run`, `resume`, `reproduce`, sweeps, repeats, SLURM jobs) and `expkit.run` all come here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from expkit.engine import phases
from expkit.engine.experiment import BaseExperiment, resolve_monitor
from expkit.engine.init import initial_weights, prepare_model
from expkit.engine.process import EXIT_CODES, StopSignals, resolve_device, stop_on_signals
from expkit.training.callbacks import Callback
from expkit.training.distributed import Dist, setup, teardown
from expkit.utils.invocation import command


def execute(experiment: BaseExperiment[Any], *, argv: list[str], run_dir: Path | None = None,
            resume: dict[str, Any] | None = None, sources: dict[str, str] | None = None,
            extra_record: dict[str, Any] | None = None,
            callbacks: list[Callback] | None = None) -> int:
    """Run (or, with `run_dir` and `resume`, continue) an experiment; returns the exit code.

    `callbacks` join the experiment's own (a sweep's trial reporting, for one).
    """
    resolve_monitor(type(experiment), experiment.args, resuming=resume is not None)
    device = resolve_device(experiment.args.use_cuda)
    dist = setup(device.type == "cuda")
    try:
        code = _execute(experiment, dist, device, argv=argv, run_dir=run_dir, resume=resume,
                        sources=sources, extra_record=extra_record, callbacks=callbacks or [])
        dist.barrier()  # ranks leave together, after rank 0 has written run.json
        return code
    finally:
        teardown()


def _execute(experiment: BaseExperiment[Any], dist: Dist, device: torch.device, *, argv: list[str],
             run_dir: Path | None, resume: dict[str, Any] | None, sources: dict[str, str] | None,
             extra_record: dict[str, Any] | None, callbacks: list[Callback]) -> int:
    """The phases of a run, in order; every exit after the run directory exists is recorded."""
    device = phases.prepare_process(experiment, dist, device)
    init_state = initial_weights(experiment.args, resume)
    data = phases.load_data(experiment, dist)
    model, init = prepare_model(experiment, data, init_state)  # a misfit: exit 2, nothing written
    if init is not None:
        extra_record = {**(extra_record or {}), "init": init.record()}
    run_dir, record = phases.open_run(experiment, dist, device, data, run_dir, argv=argv,
                                      resume=resume, sources=sources, extra_record=extra_record)
    outcome = phases.Outcome(run_dir, record, experiment.console)
    trackers = phases.local_files(experiment, dist, run_dir)
    signals = StopSignals(experiment.console.print)
    try:
        with phases.failures_handled(outcome), stop_on_signals(signals):
            trackers += phases.open_trackers(experiment, dist, run_dir, record, resume)
            trainer = phases.build_trainer(experiment, dist, device, run_dir, record, data,
                                           trackers, callbacks, model, init, resume)
            test_split = data.test
            del data  # the trainer holds what it trains on: the rest is freed before testing
            signals.trainer = trainer
            trainer.fit()
            dist.barrier()  # rank 0's checkpoints are on disk before any rank reads best.pt
            if trainer.interrupted:
                experiment.console.print(
                    f"stopped by {trainer.stop_requested} {trainer.stopped_at()}; checkpoint "
                    f"saved. Resume with: {command('resume', str(run_dir))}")
                return outcome.ended("stopped", EXIT_CODES.get(trainer.stop_requested or "", 1))
            phases.finish(experiment, trainer, run_dir, trackers, test_split)
            return outcome.ended("finished", 0)
        return outcome.exit_code  # a stop before training, or a second Ctrl-C
    finally:
        phases.close_run(outcome, trackers, dist)
