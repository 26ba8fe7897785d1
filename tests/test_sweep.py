"""`expkit sweep`: Optuna studies over normal runs, local workers, resume, pruning, PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import optuna
import pytest

from conftest import PG_PASSWORD, Workspace

SPACE = ("--space", "lr=loguniform:1e-4:1e-1", "--space", "hidden_sizes=choice:[16],[32,16]")
TRIAL_FLAGS = ("--epochs=2", "--max_train_samples=200", "--eval_batch_size=256")


def sweep(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """`run.py sweep --experiment_id=mnist ARGS` in this process (its --workers are processes)."""
    return ws.run("sweep", "--experiment_id=mnist", *args)


def study(ws: Workspace, name: str = "mnist", storage: str | None = None) -> optuna.Study:
    url = storage or f"sqlite:///{ws.results / 'sweeps' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=url)


def check_trials(ws: Workspace, trials: list[optuna.trial.FrozenTrial], name: str = "mnist") -> None:
    """Every finished trial is a normal run directory that names its trial, all params distinct."""
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    params = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(params)) == len(params), params
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        record = json.loads((run_dir / "run.json").read_text())
        assert record["status"] == "finished"
        assert record["sweep"]["name"] == name and record["sweep"]["trial"] == t.number
        config = json.loads((run_dir / "config.json").read_text())
        assert config["optimizer"]["lr"] == pytest.approx(t.params["lr"])
        assert config["model"]["hidden_sizes"] == json.loads(t.params["hidden_sizes"])
        assert len(t.intermediate_values) == 2, "one report per epoch"


@pytest.mark.slow
def test_sqlite_sweep_with_two_workers(data_workspace: Workspace) -> None:
    ws = data_workspace
    result = sweep(ws, "--trials", "6", "--workers", "2", *SPACE, "--direction", "max",
                   "--seed", "0", *TRIAL_FLAGS)
    assert result.returncode == 0, result.stderr
    assert (ws.results / "sweeps" / "mnist" / "study.db").is_file()
    trials = study(ws).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 6
    check_trials(ws, trials)
    assert "2 workers" in result.stdout
    seeds = {json.loads((Path(t.user_attrs["run_dir"]) / "config.json").read_text())["seed"]
             for t in trials}
    assert seeds == {0}, "--seed 0 seeds every trial's training too"
    assert len(ws.run_dirs()) == 6
    best = max(trials, key=lambda t: t.value or 0)
    assert f"best: trial {best.number}  value {best.value:.4f}" in result.stdout
    assert str(best.user_attrs["run_dir"]) in result.stdout
    png = ws.results / "sweeps" / "mnist" / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    status = ws.cli("sweep", "--status", "mnist")
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("complete") == 6


def grid_trials(ws: Workspace, name: str) -> list[str]:
    """The hidden_sizes of each finished trial of a grid sweep, checked against its run."""
    trials = [t for t in study(ws, name).get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    for t in trials:
        config = json.loads((Path(t.user_attrs["run_dir"]) / "config.json").read_text())
        assert config["model"]["hidden_sizes"] == json.loads(t.params["hidden_sizes"])
    return [t.params["hidden_sizes"] for t in trials]


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "widths", "in_two_goes"),
                         [(2, [2, 4, 8, 16], True), (3, [2, 4, 8, 16, 32], False)])
def test_a_grid_runs_each_point_once_whatever_the_workers(
        data_workspace: Workspace, workers: int, widths: list[int], in_two_goes: bool) -> None:
    ws = data_workspace
    grid = ("--sampler", "grid", "--space", "hidden_sizes=choice:" + ",".join(f"[{w}]" for w in widths),
            "--workers", str(workers), "--seed", "0", "--name", "grid", "--epochs=1",
            "--max_train_samples=64", "--eval_batch_size=256")
    taken: list[str] = []
    if in_two_goes:
        first = sweep(ws, "--trials", "2", *grid)  # part of the grid: two points
        assert first.returncode == 0, first.stderr
        taken = grid_trials(ws, "grid")
        assert len(taken) == len(set(taken)) == 2, taken
    again = sweep(ws, *grid)  # the rest: the points not run yet, each once
    assert again.returncode == 0, again.stderr
    points = grid_trials(ws, "grid")
    assert sorted(points) == sorted(f"[{w}]" for w in widths), points
    assert points[:len(taken)] == taken and len(ws.run_dirs()) == len(widths)


@pytest.mark.slow
def test_rerun_keeps_finished_trials_and_retries_an_interrupted_one(data_workspace: Workspace) -> None:
    ws = data_workspace
    first = sweep(ws, "--trials", "2", *SPACE, "--seed", "1", *TRIAL_FLAGS)
    assert first.returncode == 0, first.stderr
    kept = {t.number: t.params for t in study(ws).get_trials()}

    # kill -9 the sweep in the middle of its next trial (at its 5th optimizer step): that
    # trial stays "running" in the study
    killed = ws.cli("sweep", "--experiment_id=mnist", "--trials", "3", *SPACE, "--seed", "1",
                    *TRIAL_FLAGS, env={"PYTHONPATH": str(Path(__file__).parent / "hooks"),
                                       "EXPKIT_TEST_AT": "step:5:KILL"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    states = [t.state for t in study(ws).get_trials()]
    assert states.count(optuna.trial.TrialState.RUNNING) == 1, states

    again = sweep(ws, "--trials", "3", *SPACE, "--seed", "1", *TRIAL_FLAGS)
    assert again.returncode == 0, again.stderr
    assert "retrying failed trials [2]" in again.stdout
    trials = study(ws).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3, "the total stays --trials"
    assert {t.number: t.params for t in done if t.number in kept} == kept
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.number for t in failed] == [2]
    retry = [t for t in done if t.user_attrs.get("retry_of") == 2]
    assert len(retry) == 1 and retry[0].params == failed[0].params


@pytest.mark.slow
def test_median_pruner_stops_bad_trials_early(data_workspace: Workspace) -> None:
    ws = data_workspace
    flags = ("--pruner", "median", "--seed", "3", "--epochs=3", "--max_train_samples=200",
             "--eval_batch_size=256")
    # two good trials complete first (lr ~3e-3 reaches high val_acc in one epoch) ...
    good = sweep(ws, "--trials", "2", "--sampler", "random", "--space", "lr=uniform:0.003:0.004",
                 "--space", "hidden_sizes=choice:[16],[32]", *flags)
    assert good.returncode == 0, good.stderr
    # ... then the same study goes on with lr ~1e-9, which cannot learn: the median pruner
    # stops each such trial after its first epoch, below both good trials' epoch-1 value
    bad = sweep(ws, "--trials", "4", "--sampler", "random", "--space", "lr=uniform:1e-9:2e-9",
                "--space", "hidden_sizes=choice:[16],[32]", *flags)
    assert bad.returncode == 0, bad.stderr
    trials = study(ws).get_trials()
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED] * 2
    for t in trials[2:]:
        assert t.params["lr"] < 1e-8 and list(t.intermediate_values) == [1]
        metrics = json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert metrics["stop_reason"] == "pruned by the median pruner after epoch 1"
        assert metrics["epochs_run"] == 1
    assert "pruned" in bad.stdout


def test_a_changed_choice_space_is_a_clear_error(data_workspace: Workspace) -> None:
    ws = data_workspace
    first = sweep(ws, "--trials", "1", "--space", "hidden_sizes=choice:[16]", *TRIAL_FLAGS)
    assert first.returncode == 0, first.stderr
    again = sweep(ws, "--trials", "2", "--space", "hidden_sizes=choice:[16],[32]", *TRIAL_FLAGS)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "--space hidden_sizes" in again.stderr and "--name" in again.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--space", "lr=gauss:1:2"), "unknown kind 'gauss'"),
    (("--space", "lrr=loguniform:1e-4:1e-2"), "did you mean --lr?"),
    (("--space", "lr=loguniform:1e-2:1e-4"), "LOW < HIGH"),
    (("--space", "lr=uniform:0.1:1", "--sampler", "grid"), "has no grid"),
    (("--space", "lr=uniform:0:1"), "--space lr=uniform:0:1: --lr: got '0.0'"),
    (("--space", "hidden_sizes=choice:[64],[-1]"), "hidden_sizes"),
    (("--space", "lr=loguniform:1e-4:1e-2", "--trials", "0"), "trials"),
    (("--space", "lr=loguniform:1e-4:1e-2", "--direction", "min"), "--monitor_mode=max"),
    (("--space", "lr=loguniform:1e-4:1e-2", "--name", "../evil"), "--name"),
    ((), "at least one --space"),
])
def test_bad_sweeps_are_one_clear_error(workspace: Workspace, args: tuple[str, ...],
                                        message: str) -> None:
    result = workspace.run("sweep", "--experiment_id=mnist", *args)  # fails before any trial
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workspace.results / "sweeps").exists()


def test_without_optuna_the_error_says_how_to_install_it(workspace: Workspace, tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    (shim / "optuna").mkdir(parents=True)
    (shim / "optuna" / "__init__.py").write_text("raise ImportError('No module named optuna')\n")
    result = workspace.cli("sweep", "--experiment_id=mnist", "--space", "lr=uniform:0.1:0.2",
                           env={"PYTHONPATH": str(shim)})
    assert result.returncode == 1
    assert "pip install 'expkit[sweep]'" in result.stderr and "Traceback" not in result.stderr


# ---- PostgreSQL: two workers sharing one study (the server: conftest.postgres) -----------------


@pytest.mark.slow
def test_postgresql_study_shared_by_two_workers(data_workspace: Workspace, postgres: str,
                                                tmp_path: Path) -> None:
    """Two workers share one study in PostgreSQL; the password in --storage is used to connect
    and is then found in no file the sweep wrote (HOME included) and no line it printed."""
    ws = data_workspace
    wrong = sweep(ws, "--trials", "1", *SPACE, "--name", "pg",
                  "--storage", postgres.replace(PG_PASSWORD, "wrong-password"))
    assert wrong.returncode == 1 and "password authentication failed" in wrong.stderr, wrong.stderr
    result = sweep(ws, "--trials", "4", "--workers", "2", *SPACE, "--storage", postgres,
                   "--name", "pg", "--seed", "0", *TRIAL_FLAGS)
    assert result.returncode == 0, result.stderr
    assert not (ws.results / "sweeps" / "pg" / "study.db").exists()
    trials = study(ws, "pg", postgres).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    check_trials(ws, trials, "pg")
    status = ws.run("sweep", "--status", "pg", "--storage", postgres)
    assert status.returncode == 0, status.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "sweep.json" for p in written) and any(p.name == "run.json" for p in written)
    leaked = [str(p) for p in written if PG_PASSWORD.encode() in p.read_bytes()]
    assert leaked == [], f"the database password leaked into {leaked}"
    for out in (wrong, result, status):
        assert PG_PASSWORD not in out.stdout + out.stderr, "the database password was printed"
    assert "postgres:***@127.0.0.1" in result.stdout, "the storage is shown with the password masked"


def test_sweep_png_leaves_the_process_matplotlib_style_alone(tmp_path: Path) -> None:
    """Optuna's plots switch matplotlib to its ggplot style, process-wide: after sweep.png, a
    compare.png or history.png drawn in the same process keeps the default look."""
    import matplotlib

    from expkit.sweep.summary import plot_sweep

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2, n_trials=3)
    before = dict(matplotlib.rcParams)
    assert plot_sweep(study, tmp_path / "sweep.png") == tmp_path / "sweep.png"
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    changed = {k for k, v in matplotlib.rcParams.items()  # (the backend is Agg, on purpose)
               if str(before.get(k)) != str(v) and not k.startswith("backend")}
    assert not changed, sorted(changed)[:10]
