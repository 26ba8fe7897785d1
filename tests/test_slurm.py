"""`expkit submit` on a real single-node SLURM cluster (tests/slurm.py) that the fixture starts
from nothing: a submitted run finishes with a complete run directory; the time-limit signal
and an admin's requeue each stop a run mid-epoch, requeue the job, and the restarted job
resumes in the same directory to the history and weights of an uninterrupted run; a job of
two torchrun ranks."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import Workspace
from expkit.rundir.results import wall_clock
from runs import index_rows
from slurm import Cluster, slurm_installed

HOOKS = str(Path(__file__).parent / "hooks")
TRAIN = ("--experiment_id=mnist", "--epochs=3", "--seed=0", "--max_train_samples=400",
         "--batch_size=32")  # 13 steps an epoch


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if not slurm_installed():
        if os.environ.get("CI"):
            pytest.fail("CI must run the SLURM tests: .ci/run installs slurmctld, slurmd, munge")
        pytest.skip("SLURM is not installed (apt-get install slurmctld slurmd slurm-client munge)")
    started = Cluster().start()
    yield started
    started.stop()


def submit(ws: Workspace, cluster: Cluster, *args: str, env: dict[str, str] | None = None
           ) -> tuple[str, Path]:
    """`run.py submit ARGS` in this process; the job id and run directory it printed."""
    result = ws.run("submit", *args, env={"SLURM_CONF": cluster.env["SLURM_CONF"], **(env or {})})
    assert result.returncode == 0, result.stderr
    found = re.search(r"submitted SLURM job (\d+): (\S+)", result.stdout)
    assert found, result.stdout
    return found.group(1), Path(found.group(2))


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def wait_ended(cluster: Cluster, job: str, run_dir: Path, timeout: float = 600) -> dict:
    """Until the run has ended (run.json: finished or failed) and its job left the queue; run.json."""
    deadline = time.monotonic() + timeout
    while record(run_dir).get("status") not in ("finished", "failed"):
        assert time.monotonic() < deadline, f"job {job} did not end: {record(run_dir)}"
        time.sleep(0.2)
    cluster.wait_gone(job)
    return record(run_dir)


def listed_status(ws: Workspace, cluster: Cluster, run_dir: Path) -> str:
    shown = ws.run("list", env={"SLURM_CONF": cluster.env["SLURM_CONF"]})
    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if run_dir.name in line]
    return line


def same_training(reference: Path, resumed: Path) -> None:
    """Every history value and every weight equal to those of the uninterrupted run."""
    def rows(run: Path) -> list[dict[str, str]]:
        lines = (run / "history.csv").read_text().splitlines()
        keys = lines[0].split(",")
        return [{k: v for k, v in zip(keys, line.split(","), strict=True) if not wall_clock(k)}
                for line in lines[1:]]
    assert rows(resumed) == rows(reference)
    a = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_submitted_run_finishes_with_a_complete_run_directory(data_workspace: Workspace,
                                                                cluster: Cluster) -> None:
    ws = data_workspace
    job, run_dir = submit(ws, cluster, "--experiment_id=mnist", "--epochs=2", "--seed=0",
                          "--max_train_samples=200", "--slurm_time=10", "--slurm_cpus_per_task=1",
                          "--slurm_sbatch=--comment=expkit-test")
    assert run_dir.parent == ws.results / "mnist"
    script = (run_dir / "slurm" / "job.sh").read_text()
    for line in ("#SBATCH --time=10", "#SBATCH --cpus-per-task=1", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --comment=expkit-test"):
        assert line in script
    rec = wait_ended(cluster, job, run_dir)
    assert rec["status"] == "finished" and rec["slurm"]["job_id"] == job, rec
    assert [a["restart"] for a in rec["slurm"]["attempts"]] == [0]
    assert rec["argv"][:1] == ["--experiment_id=mnist"] and "--slurm_time=10" not in rec["argv"]
    for name in ("config.json", "history.csv", "history.png", "metrics.json", "report.html",
                 "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run_dir / name).is_file(), name
    out = (run_dir / "slurm" / f"job-{job}.out").read_text()
    assert "done:" in out and str(run_dir) in out
    assert "finished" in listed_status(ws, cluster, run_dir)
    index = ws.run("report", "--index")
    assert index.returncode == 0, index.stderr
    assert index_rows(ws.results)[run_dir.name]["job"] == f"{job}, 1 attempt"


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TRAIN run without interruption (same generated data as data_workspace's)."""
    from conftest import _clean_env, write_idx_set

    tmp = tmp_path_factory.mktemp("reference")
    ws = Workspace(tmp / "ws", _clean_env(tmp))
    ws.root.mkdir()
    write_idx_set(ws.cache / "mnist")
    result = ws.run(*TRAIN)
    assert result.returncode == 0, result.stderr
    return ws.last_run()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SLURM_USR1", "SLURM_REQUEUE"])
def test_signal_requeue_resume_matches_an_uninterrupted_run(data_workspace: Workspace,
                                                          cluster: Cluster, how: str,
                                                          reference_dir: Path) -> None:
    ws = data_workspace
    job, run_dir = submit(ws, cluster, *TRAIN, "--slurm_time=10", "--slurm_cpus_per_task=1",
                          env={"PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": f"step:18:{how}"})
    # the first attempt stops at step 18 (mid-epoch 2); the job waits ~10 s to restart
    # (the cluster's credential expiry), long enough to look at it while it waits
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            record(run_dir).get("status") in ("requeued", "stopped") and cluster.state(job) == "PENDING"):
        time.sleep(0.1)
    assert len(record(run_dir)["slurm"]["attempts"]) == 1
    if how == "SLURM_USR1":  # marked by the job script before it requeued the job
        assert record(run_dir)["status"] == "requeued"
    line = listed_status(ws, cluster, run_dir)
    assert "requeued" in line and f"{job}, 1 attempt" in line, line
    rec = wait_ended(cluster, job, run_dir)  # after SLURM's requeue delay (~10 s here)
    assert rec["status"] == "finished", rec
    assert [a["restart"] for a in rec["slurm"]["attempts"]] == [0, 1]
    assert len(rec["resumes"]) == 1
    out = (run_dir / "slurm" / f"job-{job}.out").read_text()
    assert "SIGTERM received" in out and out.count("SIGTERM received") == 1, out
    same_training(reference_dir, run_dir)


@pytest.mark.slow
def test_a_job_of_two_torchrun_ranks(data_workspace: Workspace, cluster: Cluster) -> None:
    ws = data_workspace
    job, run_dir = submit(ws, cluster, "--experiment_id=mnist", "--epochs=2", "--seed=0",
                          "--max_train_samples=200", "--slurm_ranks_per_node=2")
    assert "--nproc-per-node=2" in (run_dir / "slurm" / "job.sh").read_text()
    rec = wait_ended(cluster, job, run_dir)
    assert rec["status"] == "finished", (run_dir / "slurm" / f"job-{job}.err").read_text()[-3000:]
    assert rec["distributed"]["world_size"] == 2
    assert len(rec["slurm"]["attempts"]) == 1  # rank 0 alone records the start


@pytest.mark.slow
def test_a_grid_sweep_of_two_worker_jobs_survives_a_requeue_mid_trial(data_workspace: Workspace,
                                                                 cluster: Cluster) -> None:
    import optuna

    ws = data_workspace
    conf = {"SLURM_CONF": cluster.env["SLURM_CONF"]}
    journal = f"journal:{ws.results / 'sweeps' / 'cluster.journal'}"  # a shared filesystem's store
    result = ws.run("sweep", *TRAIN, "--name=cluster", "--trials=4", "--workers=2", f"--storage={journal}",
                    "--sampler=grid", "--space", "lr=choice:0.001,0.003,0.01,0.03", "--launcher=slurm",
                    "--slurm_cpus_per_task=1", "--slurm_time=10",
                    env={**conf, "PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": "step:20:SLURM_REQUEUE",
                         "EXPKIT_TEST_JOB_NAME": "expkit-sweep-cluster-w1"})
    assert result.returncode == 0, result.stderr
    jobs = re.findall(r"submitted SLURM job (\d+): worker (\d)", result.stdout)
    assert [w for _, w in jobs] == ["0", "1"], result.stdout
    deadline = time.monotonic() + 600
    from expkit.sweep.study import open_storage

    study = optuna.load_study(study_name="cluster", storage=open_storage(journal))
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    while sum(t.state in done for t in study.get_trials()) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    cluster.wait_gone(*(j for j, _ in jobs), timeout=600)
    folder = ws.results / "sweeps" / "cluster"
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3], "4 trials, none duplicated"
    assert sorted(t.params["lr"] for t in trials) == ["0.001", "0.003", "0.01", "0.03"], \
        "each grid point once, whichever job asked for it"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), \
        [(t.number, t.state) for t in trials]
    runs = [Path(t.user_attrs["run_dir"]) for t in trials]
    assert len(set(runs)) == 4 and sorted(runs) == sorted(ws.run_dirs())
    [resumed] = [t for t in trials if record(Path(t.user_attrs["run_dir"])).get("resumes")]
    assert resumed.user_attrs["slurm_job"] == jobs[1][0]
    worker1 = (folder / "slurm" / f"worker1-{jobs[1][0]}.out").read_text()
    assert f"trial {resumed.number}: stopped with a checkpoint" in worker1
    assert f"trial {resumed.number}: resumed" in worker1
    assert resumed.value == ws.metrics(Path(resumed.user_attrs["run_dir"]))["best"]["val_acc"]
    reference = ws.run(*TRAIN, f"--lr={resumed.params['lr']}")  # the same trial, uninterrupted
    assert reference.returncode == 0, reference.stderr
    same_training(ws.last_run(), Path(resumed.user_attrs["run_dir"]))
    status = ws.run("sweep", "--status", "cluster", "--storage", journal)
    assert status.returncode == 0 and jobs[1][0] in status.stdout


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("--slurm_cpus_per_task=0",), 2, "--slurm_cpus_per_task: got '0'"),
    (("--slurm_time",), 2, "--slurm_time: needs a value"),
    (("--lr=-1",), 2, "--lr"),                                  # the run's own flags first
    (("--slurm_partition=nowhere",), 1, "sbatch refused the job"),
])
def test_bad_submissions_are_one_clear_error_and_leave_nothing(
        data_workspace: Workspace, cluster: Cluster, args: tuple[str, ...], code: int,
        needle: str) -> None:
    ws = data_workspace
    result = ws.run("submit", "--experiment_id=mnist", *args,
                    env={"SLURM_CONF": cluster.env["SLURM_CONF"]})
    assert result.returncode == code and needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert ws.run_dirs() == [], "no run directory is left behind"
