"""Weights & Biases, when --use_wandb=true: config once, metrics per epoch, summary, and the
final history.png when the run closes.

A resumed run first sends the epochs wandb lacks: wandb-core writes its run file (and sends)
seconds behind the training loop, so a SIGKILL loses the newest epochs there while
history.csv and last.pt have them. Which epochs wandb kept is read from its own run files
(.wandb, LevelDB-log framed protobuf records) of the earlier segments; the rest of the
restored history is logged again, in order, so every epoch is in wandb exactly once.

wandb is imported only here (an optional extra). The API key comes from config.yaml or
WANDB_API_KEY and goes to wandb only through its settings object: never into the config,
a log line or the run directory. Resume continues the same wandb run (its id is in last.pt).
"""

from __future__ import annotations

import html
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from expkit.config.machine import WandbSettings
from expkit.errors import ExpkitError
from expkit.rundir.results import row_step
from expkit.rundir.values import flatten
from expkit.tracking.base import Tracker


class WandbTracker(Tracker):
    """The Tracker that logs to wandb (online, offline for later `wandb sync`, or disabled)."""

    def __init__(self, run_dir: Path, settings: WandbSettings, experiment_id: str,
                 run_id: str | None, say: Callable[[str], None]) -> None:
        try:
            import wandb
        except ImportError:
            raise ExpkitError("--use_wandb=true needs wandb: pip install 'expkit[wandb]' "
                              "(or --use_wandb=false)") from None
        self.wandb = wandb
        self.say = say
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.experiment_id = experiment_id
        self.mode = settings.mode
        self.key = settings.api_key.get_secret_value() if settings.api_key else None
        if self.mode == "online" and not self.key and not _netrc_has_wandb():
            say("warning: wandb mode is online but there is no API key (config.yaml wandb.api_key "
                "or WANDB_API_KEY): logging to wandb offline instead; local files are complete")
            self.mode = "offline"
        from wandb.sdk.lib import runid

        self.run_id = run_id or runid.generate_id()
        self.ids = {"wandb": self.run_id}
        self.run: Any = None
        self.step: int | None = None  # the last epoch logged

    def run_ids(self) -> dict[str, str]:
        """{"wandb": run id}: a resume continues the same wandb run."""
        return dict(self.ids)

    def log_config(self, config: dict[str, Any]) -> None:
        """Start (or resume) the wandb run with the nested config."""
        kwargs: dict[str, Any] = {"console": "off", "silent": True}
        if self.key:
            kwargs["api_key"] = self.key
        self.run = self.wandb.init(
            project=self.settings.project, entity=self.settings.entity, mode=self.mode,
            dir=str(self.run_dir), id=self.run_id, resume="allow", config=config,
            name=f"{self.experiment_id}/{self.run_dir.name}", settings=self.wandb.Settings(**kwargs))

    def restore(self, rows: list[dict[str, float]]) -> None:
        """On resume: send the epochs of the restored history that no earlier segment's wandb
        run file holds (the newest ones, lost when the process was killed)."""
        self.step = logged_step(self.run_dir / "wandb", self.run_id)
        for row in rows:
            self.log_epoch([row])

    def log_epoch(self, rows: list[dict[str, float]]) -> None:
        """Log the newest row at step = epoch, or the optimizer step in a step-based run (so a
        resumed run never steps backwards); a row wandb already holds is not sent twice."""
        row = rows[-1]
        if self.step is None or row_step(row) > self.step:
            self.step = row_step(row)
            self.run.log(row, step=self.step)

    def log_artifact(self, name: str, path: Path, value: Any, epoch: int) -> None:
        """An evaluation's artifact as media at step = epoch: text as HTML (preformatted,
        escaped), an image as an image."""
        media: Any
        if isinstance(value, str):
            media = self.wandb.Html(f"<pre>{html.escape(value)}</pre>", inject=False)
        else:
            media = self.wandb.Image(str(path))
        self.run.log({f"artifacts/{name}": media}, step=epoch)

    def log_summary(self, summary: dict[str, Any]) -> None:
        """Best/final/test values into the run summary."""
        self.run.summary.update(flatten(summary, sep="/"))

    def close(self, status: str) -> None:
        """history.png as an image (the local files tracker, closed first, has drawn its last
        version by now), then finish the wandb run (exit code 0 only when training finished)."""
        if self.run is not None:
            plot = self.run_dir / "history.png"
            if plot.is_file() and self.step is not None:  # into the last epoch's row
                self.run.log({"history": self.wandb.Image(str(plot))}, step=self.step)
            self.run.finish(exit_code=0 if status == "finished" else 1)
            self.run = None
            if self.mode == "offline":
                self.say(offline_hint(self.run_dir, self.run_id))


def offline_hint(run_dir: Path, run_id: str) -> str:
    """Where an offline wandb run's files are and the command that uploads them (every
    segment of a resumed run: one folder per process)."""
    segments = sorted((Path(run_dir) / "wandb").glob(f"offline-run-*-{run_id}"))
    shown = (str(segments[0]) if len(segments) == 1
             else str(Path(run_dir).absolute() / "wandb" / f"offline-run-*-{run_id}"))
    return f"wandb: logged offline to {Path(run_dir) / 'wandb'}; upload it with: wandb sync {shown}"


def _netrc_has_wandb() -> bool:
    try:
        import netrc

        hosts = netrc.netrc(os.environ.get("NETRC")).hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def logged_step(wandb_dir: Path, run_id: str) -> int | None:
    """The newest step in the history records of the run's files under `wandb_dir` (each
    segment of a resumed run has its own), None when none holds a history record."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    steps = [-1]
    for path in wandb_dir.glob(f"*-{run_id}/run-{run_id}.wandb"):
        for data in read_records(path):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(data)
            except DecodeError:  # the record torn by the kill
                continue
            if record.WhichOneof("record_type") == "history":
                steps.append(record.history.step.num)
    return max(steps) if max(steps) >= 0 else None


BLOCK = 32768  # the LevelDB log format wandb's run files use: 32 KiB blocks of framed records


def read_records(path: Path) -> Iterator[bytes]:
    """The protobuf payloads of a wandb run file: a 7-byte file header, then records framed
    by a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) that never
    straddle a block. A file cut short (a killed writer) ends at its last whole record."""
    raw = path.read_bytes()
    if raw[:4] != b":W&B":
        return
    pos, pending = 7, b""
    while pos + 7 <= len(raw):
        if BLOCK - pos % BLOCK < 7:  # the block's tail is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        pos += 7
        if (kind == 0 and length == 0) or pos + length > len(raw):
            return
        pending += raw[pos:pos + length]
        pos += length
        if kind in (1, 4):
            yield pending
            pending = b""
