"""MLflow, when --use_mlflow=true: params, metrics per evaluation, summary, artifacts and tags
on a tracking server (`pip install 'expkit[mlflow]'`: the mlflow-skinny client).

- params: the nested config flattened to dotted names (`optimizer.lr`); metrics at step =
  epoch, or the optimizer step in a step-based run; best/final/test values at the end;
  each evaluation's artifacts, history.png, history.csv and metrics.json; best.pt and last.pt
  only with --mlflow_log_checkpoints=true; tags: experiment id, run directory, git commit,
  and `expkit.status` (running, finished, failed, stopped, killed).
- Resume continues the same MLflow run (its id is in the checkpoints and run.json) and sends
  the steps the server lacks, so each step is there once, also after a SIGKILL.
- A server that cannot be reached, at the start or later: one warning, and the run goes on
  with its local files; `expkit sync RUN_DIR` sends the run when the server is back.
- Credentials stay in the environment (MLFLOW_TRACKING_USERNAME/_PASSWORD/_TOKEN, read by
  mlflow) or in the URI, which is shown only with its password masked; mlflow's own "View
  run at <uri>" line is switched off, since it would print the URI as given.

mlflow is imported only here: runs without --use_mlflow never pay its import (~1.5 s).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from expkit.config.machine import MlflowSettings, redact
from expkit.errors import ExpkitError
from expkit.rundir.results import read_artifacts, read_history, row_step
from expkit.rundir.values import as_typed, flatten
from expkit.tracking.base import Tracker
from expkit.utils.invocation import command

#: what a client does against an unreachable server unless the user set these: a few seconds
#: of retries, not mlflow's default of minutes (the training loop waits on each call)
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
#: expkit's run status -> MLflow's run status
TERMINAL = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED", "killed": "KILLED"}
#: what the transport errors inside mlflow's messages mean
CONNECTION_ERRORS = {"Connection refused": "connection refused: is the server running?",
                     "NewConnectionError": "cannot connect: is the server running?",
                     "Max retries exceeded": "the server stopped answering",
                     "Read timed out": "the server did not answer in time"}
MAX_PARAM = 6000  # characters: the server refuses longer param values
BATCH = 500       # metrics per request (the server takes 1000)


class MlflowTracker(Tracker):
    """The Tracker that logs a run to an MLflow tracking server. Any failure of the server
    switches it off for the rest of the run, with one warning."""

    def __init__(self, run_dir: Path, settings: MlflowSettings, experiment_id: str, run_id: str | None,
                 say: Callable[[str], None], log_checkpoints: bool = False,
                 commit: str | None = None) -> None:
        try:
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ExpkitError("--use_mlflow=true needs mlflow: pip install 'expkit[mlflow]' "
                              "(or --use_mlflow=false)") from None
        for name, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # it prints the URI as given
        for logger in ("mlflow", "urllib3.connectionpool"):  # retries log one line each
            logging.getLogger(logger).setLevel(logging.CRITICAL)
        self.Metric, self.Param, self.RunTag = Metric, Param, RunTag
        uri = settings.tracking_uri.get_secret_value() if settings.tracking_uri else None
        self.uri = redact(uri) if uri else "mlflow's default tracking URI"
        self.secrets = [s for s in (_password(uri), *(os.environ.get(f"MLFLOW_TRACKING_{k}")
                                                     for k in ("PASSWORD", "TOKEN"))) if s]
        self._client: Callable[[], Any] = lambda: MlflowClient(tracking_uri=uri)
        self.client: Any = None  # made when the run starts: making it may fail (a bad URI)
        self.run_dir = Path(run_dir).absolute()  # the same tag from a run and from `expkit sync`
        self.experiment_name = settings.experiment_name or experiment_id
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.say = say
        self.log_checkpoints = log_checkpoints
        self.commit = commit
        self.ids: dict[str, str] = {}
        self.kept: dict[str, Any] = {}  # run.json's `mlflow` section, once the run exists
        self.broken = False
        self.held: dict[str, set[int]] = {}  # metric -> steps the server holds (after restore)
        self.last_step: int | None = None

    # ---- the Tracker protocol ---------------------------------------------------------------

    def log_config(self, config: dict[str, Any]) -> None:
        """Start the MLflow run (or continue the one whose id was saved) and send the params it
        lacks (params cannot change in MLflow: a resumed run keeps those it started with)."""
        self._guard("start the run", self._start, config)

    def restore(self, rows: list[dict[str, float]]) -> None:
        """On resume: send the evaluations of the restored history that the server lacks."""
        self._guard("send the restored history", self._restore, rows)

    def log_epoch(self, rows: list[dict[str, float]]) -> None:
        """Send the newest evaluation's metrics at its step (one request)."""
        row = rows[-1]
        self._guard("log metrics", self._send_rows, [row])

    def log_artifact(self, name: str, path: Path, value: Any, epoch: int) -> None:
        """Upload an evaluation's artifact file under artifacts/<name>/ (as it is on disk)."""
        self._guard("upload an artifact", self._upload, [path], f"artifacts/{name}")

    def log_summary(self, summary: dict[str, Any]) -> None:
        """best/<metric>, final/<metric> and test metrics at the last step, the rest as tags."""
        self._guard("log the summary", self._summary, summary)

    def close(self, status: str) -> None:
        """Upload history.png/.csv and metrics.json (and the checkpoints when asked), tag the
        status, and end the MLflow run as FINISHED, FAILED or KILLED."""
        self._guard("close the run", self._close, status)

    def run_ids(self) -> dict[str, str]:
        """{"mlflow": run id} once the run exists (a resume continues it)."""
        return dict(self.ids)

    def record_fields(self) -> dict[str, Any]:
        """run.json's `mlflow` section: the run's id, experiment and server (`expkit sync`
        continues that run)."""
        return {"mlflow": dict(self.kept)} if self.kept else {}

    # ---- the work -----------------------------------------------------------------------------

    def _guard(self, what: str, work: Callable[..., None], *args: Any) -> None:
        if self.broken:
            return
        try:
            work(*args)
        except Exception as e:  # the server's failures must never end the training
            self.broken = True
            self.say(f"warning: MLflow at {self.uri}: could not {what} ({self._reason(e)}); the "
                     "run goes on with its local files only. Once the server is reachable, send "
                     f"this run with: {command('sync', str(self.run_dir))}")

    def _reason(self, error: Exception) -> str:
        """Why a call failed, in a few words (mlflow's messages hold whole request URLs)."""
        text = str(error)
        for needle, said in CONNECTION_ERRORS.items():
            if needle in text:
                return said
        text = text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def _start(self, config: dict[str, Any]) -> None:
        self.client = self._client()
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            eid = (experiment.experiment_id if experiment is not None
                   else self.client.create_experiment(self.experiment_name))
            run = self.client.create_run(eid, run_name=f"{self.experiment_id}/{self.run_dir.name}")
            self.run_id = run.info.run_id
        else:
            run = self.client.get_run(self.run_id)
            self.client.update_run(self.run_id, status="RUNNING")
        self.ids = {"mlflow": self.run_id}
        self.kept = {"run_id": self.run_id, "experiment_id": run.info.experiment_id,
                     "tracking_uri": self.uri}
        held = run.data.params
        params = [self.Param(key, as_typed(value)[:MAX_PARAM]) for key, value in flatten(config).items()
                  if key not in held]
        for chunk in _chunks(params, 100):
            self.client.log_batch(self.run_id, params=chunk)
        tags = {"expkit.experiment_id": self.experiment_id, "expkit.run_dir": str(self.run_dir),
                "expkit.status": "running", "mlflow.source.name": "expkit"}
        if self.commit:
            tags["mlflow.source.git.commit"] = self.commit
        self.client.log_batch(self.run_id, tags=[self.RunTag(k, v) for k, v in tags.items()])
        self.say(f"mlflow: run {self.run_id} in experiment {self.experiment_name!r} at {self.uri}")

    def _restore(self, rows: list[dict[str, float]]) -> None:
        assert self.run_id is not None
        keys = {key for row in rows for key in _metrics(row)}
        self.held = {key: {m.step for m in self.client.get_metric_history(self.run_id, key)}
                     for key in sorted(keys)}
        self._send_rows(rows)
        self.held = {}

    def _send_rows(self, rows: list[dict[str, float]]) -> None:
        assert self.run_id is not None
        now = int(time.time() * 1000)
        metrics = [self.Metric(key, value, now, row_step(row))
                   for row in rows for key, value in _metrics(row).items()
                   if row_step(row) not in self.held.get(key, ())]
        for chunk in _chunks(metrics, BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)
        if rows:
            self.last_step = row_step(rows[-1])

    def _upload(self, paths: Iterable[Path], folder: str | None) -> None:
        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path), folder)

    def _summary(self, summary: dict[str, Any]) -> None:
        assert self.run_id is not None
        step, now = self.last_step or 0, int(time.time() * 1000)
        values = {f"{part}/{k}": v for part in ("best", "final")
                  for k, v in (summary.get(part) or {}).items() if k not in ("epoch", "step")}
        values |= dict(summary.get("test") or {})
        metrics = [self.Metric(k, float(v), now, step) for k, v in values.items()
                   if isinstance(v, int | float)]
        tags = [self.RunTag(f"expkit.{k}", v if isinstance(v, str) else json.dumps(v))
                for k, v in summary.items() if k not in ("best", "final", "test") and v is not None]
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)

    def _close(self, status: str) -> None:
        if self.run_id is None:
            return
        files = [self.run_dir / name for name in ("history.png", "history.csv", "metrics.json")]
        self._upload(files, None)
        if self.log_checkpoints:
            self._upload(sorted((self.run_dir / "checkpoints").glob("*.pt")), "checkpoints")
        self.client.set_tag(self.run_id, "expkit.status", status)
        self.client.set_terminated(self.run_id, status=TERMINAL.get(status, "FAILED"))


def _metrics(row: dict[str, float]) -> dict[str, float]:
    """A history row's metrics: all but its x (the step; the epoch unless step-based, where
    the epoch is a fraction of passes worth plotting)."""
    return {k: v for k, v in row.items() if k != "step" and (k != "epoch" or "step" in row)}


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _password(uri: str | None) -> str | None:
    """The password inside a URI (`https://user:PASSWORD@host`), if there is one."""
    if not uri:
        return None
    from urllib.parse import urlsplit

    return urlsplit(uri).password


def sync_run(run_dir: Path, settings: MlflowSettings, say: Callable[[str], None]) -> bool:
    """Send a run directory to MLflow: what the server lacks of its params, history, summary,
    artifacts and status (a run whose server was away, or a killed one, which could not close
    its MLflow run). The MLflow run of run.json or the last checkpoint is continued, else a new
    one is made (and recorded in run.json). Returns whether everything was sent."""
    from expkit.rundir.dirs import RunRecord, shown_status

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "run.json").is_file():
        raise ExpkitError(f"{run_dir}: not a run directory (it has no config.json and run.json)")
    record = RunRecord(run_dir)
    data = record.read()
    status = shown_status(data, run_dir)
    if status == "running":
        raise ExpkitError(f"{run_dir}: the run is still running; it logs to MLflow itself")
    config = json.loads((run_dir / "config.json").read_text())
    tracker = MlflowTracker(run_dir, settings, str(data.get("experiment_id") or config["experiment_id"]),
                            (data.get("mlflow") or {}).get("run_id"), say,
                            log_checkpoints=bool((config.get("trainer") or {}).get("mlflow_log_checkpoints")),
                            commit=(data.get("code") or {}).get("commit"))
    tracker.log_config(config)
    record.update(**tracker.record_fields())
    tracker.restore(read_history(run_dir))
    if (run_dir / "metrics.json").is_file():
        tracker.log_summary(json.loads((run_dir / "metrics.json").read_text()))
    for name, files in read_artifacts(run_dir).items():
        tracker._guard("upload artifacts", tracker._upload, files, f"artifacts/{name}")
    tracker.close(status)
    if not tracker.broken:
        say(f"sent {run_dir} to MLflow run {tracker.run_id} ({status})")
    return not tracker.broken


