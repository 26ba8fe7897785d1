"""Where a run's time goes: cheap wall-clock timers around the loop's parts (the next batch,
forward and backward, the optimizer step, evaluation, checkpoints, trackers, other
callbacks), the training throughput of each evaluation period, and a torch.profiler trace of
chosen steps (`--profile=N`).

On CUDA the loop's parts run asynchronously: a timer then measures what the host waited for,
unless `--sync_timing=true` synchronizes the device at each boundary (exact, and slower).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: the parts of a run's wall time, as metrics.json's `time` names them
PARTS = ("data", "compute", "optimizer", "evaluation", "checkpoints", "trackers", "callbacks")
#: what each part is called when shown
SHOWN = {"data": "data", "compute": "forward+backward", "optimizer": "optimizer",
         "evaluation": "evaluation", "checkpoints": "checkpoints", "trackers": "trackers",
         "callbacks": "other callbacks"}


def _off() -> float:
    return 0.0


class Timings:
    """Seconds per part, for the evaluation period under way and for the whole run."""

    def __init__(self, device: torch.device, enabled: bool = True, sync: bool = False) -> None:
        self.enabled = enabled
        if not enabled:
            self.clock: Callable[[], float] = _off
        elif sync and device.type == "cuda":
            def synced() -> float:
                torch.cuda.synchronize(device)
                return time.perf_counter()
            self.clock = synced
        else:
            self.clock = time.perf_counter
        self.total = dict.fromkeys(PARTS, 0.0)
        self.period = dict.fromkeys(PARTS, 0.0)

    def add(self, part: str, seconds: float) -> None:
        """`seconds` more spent in `part`."""
        self.period[part] += seconds
        self.total[part] += seconds

    def start_period(self) -> None:
        """A new evaluation period: its parts from zero."""
        self.period = dict.fromkeys(PARTS, 0.0)

    def row(self, examples: int, unit: str) -> dict[str, float]:
        """The period's columns for the history: its throughput (`samples_per_second`, or
        `tokens_per_second`) over the training time, and its seconds of data, compute,
        optimizer and evaluation ({} when timing is off)."""
        if not self.enabled:
            return {}
        training = self.period["data"] + self.period["compute"] + self.period["optimizer"]
        out = {f"{unit}_per_second": examples / training} if training > 0 else {}
        return out | {f"{part}_time": self.period[part]
                      for part in ("data", "compute", "optimizer", "evaluation")}

    def summary(self) -> dict[str, Any]:
        """metrics.json's `time`: seconds per part over the run, and whether it was input-bound
        (more time waiting for batches than computing them)."""
        training = self.total["compute"] + self.total["optimizer"]
        return {**{part: round(seconds, 4) for part, seconds in self.total.items()},
                "input_bound": self.total["data"] > training}

    def line(self) -> str | None:
        """"time: data 4%, forward+backward 70%, ..." (and a hint when input-bound); None when
        timing is off or nothing was timed."""
        spent = sum(self.total.values())
        if not self.enabled or spent <= 0:
            return None
        shares = ", ".join(f"{SHOWN[part]} {seconds / spent:.0%}" for part, seconds in self.total.items()
                           if seconds / spent >= 0.005)
        line = f"time: {shares}"
        if self.summary()["input_bound"]:
            line += ("; input-bound: more time went to getting batches than to computing them "
                     "(try --num_workers, --in_memory=true or a cheaper augmentation)")
        return line


def profiled_steps(asked: int, total: int) -> int:
    """How many steps --profile traces: those asked for, but no more than the run has after
    its first (a warm-up, not traced), so that no trace span is an evaluation's."""
    return max(1, min(asked, total - 1))


def part_of(callback: Any) -> str:
    """Which part of the time a callback's end-of-period work counts in."""
    name = type(callback).__name__
    return {"Checkpointing": "checkpoints", "Tracking": "trackers"}.get(name, "callbacks")


class StepProfiler:
    """torch.profiler over optimizer steps 2 to N+1 (the first is a warm-up), its Chrome trace
    (which Perfetto and chrome://tracing open) written to `path` when they are done."""

    def __init__(self, steps: int, path: Path, cuda: bool) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule

        self.path = path
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        self.profiler = profile(activities=activities, record_shapes=True,
                                schedule=schedule(wait=1, warmup=0, active=steps, repeat=1),
                                on_trace_ready=self._write)
        self.profiler.start()
        self.open = True

    def _write(self, profiler: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        profiler.export_chrome_trace(str(self.path))

    def step(self) -> None:
        """One optimizer step done."""
        if self.open:
            self.profiler.step()

    def close(self) -> None:
        """Stop profiling (the trace is written when its steps were reached)."""
        if self.open:
            self.open = False
            self.profiler.stop()
