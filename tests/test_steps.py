"""Step-based training (--max_steps, --eval_every): an evaluation every K optimizer steps,
wherever in a pass it falls; a kill or a stop anywhere between two evaluations resumes to
the numbers of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest

from conftest import Workspace
from expkit.training.checkpoint import load_checkpoint
from test_resume import HOOKS, assert_same_training, big_workspace  # noqa: F401 (fixture)

# 1,000 examples, 10% for validation, batch 64: 15 steps a pass; evaluations at steps 10, 20,
# 30, 40 fall inside passes 1, 2, 2 and 3
STEPS = ("--experiment_id=mnist", "--max_steps=40", "--eval_every=10", "--seed=3",
         "--hidden_sizes=[64]", "--dropout=0.1", "--use_cuda=false")


def history(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "history.csv").open()))


def test_a_step_based_run_evaluates_every_k_steps(big_workspace: Workspace) -> None:  # noqa: F811
    ws = big_workspace
    result = ws.run(*STEPS)
    assert result.returncode == 0, result.stderr
    run = ws.last_run()
    rows = history(run)
    assert [row["step"] for row in rows] == ["10", "20", "30", "40"]
    assert [float(row["epoch"]) for row in rows] == [round(s / 15, 4) for s in (10, 20, 30, 40)], \
        "epoch: the passes over the training data so far, with the fraction of the current one"
    assert all(row["val_acc"] and row["train_loss"] for row in rows)
    metrics = ws.metrics(run)
    assert metrics["steps_run"] == 40 and metrics["stop_reason"] == "completed all 40 steps"
    best = max(rows, key=lambda row: float(row["val_acc"]))
    assert metrics["best_step"] == int(best["step"])
    assert "step 20/40  epoch 1.33" in result.stdout
    assert load_checkpoint(run / "checkpoints" / "last.pt")["steps"] == 40
    assert (run / "history.png").stat().st_size > 0
    assert "<th>best step</th>" in (run / "report.html").read_text()
    # a finished step-based run trains on with a larger --max_steps, not with --epochs
    longer = ws.run("resume", str(run), "--max_steps=55")
    assert longer.returncode == 0, longer.stderr
    assert [row["step"] for row in history(run)] == ["10", "20", "30", "40", "50", "55"]
    switched = ws.run("resume", str(run), "--max_steps=auto", "--eval_every=auto")
    assert switched.returncode == 2 and "a run keeps counting what it started with" in switched.stderr


def test_eval_every_needs_max_steps(workspace: Workspace) -> None:
    result = workspace.fork("--experiment_id=mnist", "--eval_every=10")
    assert result.returncode == 2 and "--eval_every counts optimizer steps" in result.stderr
    assert "Traceback" not in result.stderr and not workspace.run_dirs()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "step"), [
    ("KILL", 23),  # inside a period, inside the second pass
    ("INT", 15),   # inside a period, at the end of the first pass
    ("TERM", 27),  # inside a period that began inside a pass
])
def test_kill_or_stop_between_evaluations_resumes_exactly(big_workspace: Workspace,  # noqa: F811
                                                          sig: str, step: int) -> None:
    ws = big_workspace
    assert ws.run(*STEPS).returncode == 0
    reference = ws.last_run()
    proc = ws.fork(*STEPS, env={"PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": f"step:{step}:{sig}"})
    assert proc.returncode == {"KILL": -signal.SIGKILL, "INT": 130, "TERM": 143}[sig], proc.stderr
    run = next(r for r in ws.run_dirs() if r != reference)
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    if sig == "KILL":  # the last evaluation's checkpoint
        assert saved["steps"] == 20 and saved["partial"] is None
    else:  # a checkpoint at the very step the signal came after
        assert saved["steps"] == step and saved["partial"]["steps"] == step % 10
    resumed = ws.cli("resume", str(run), entry="expkit")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_training(reference, run)


def test_patience_counts_evaluations(big_workspace: Workspace) -> None:  # noqa: F811
    ws = big_workspace
    result = ws.run("--experiment_id=mnist", "--max_steps=150", "--eval_every=3", "--seed=0",
                    "--hidden_sizes=[16]", "--lr=0.05", "--early_stopping_patience=2")
    assert result.returncode == 0, result.stderr
    rows = history(ws.last_run())
    values = [float(row["val_acc"]) for row in rows]
    best = values.index(max(values))
    assert len(rows) == best + 3 < 50, "stopped after 2 evaluations without improvement"
    assert [int(row["step"]) for row in rows] == [3 * (i + 1) for i in range(len(rows))]
    assert json.loads((ws.last_run() / "metrics.json").read_text())["stop_reason"].startswith("early")


LM_STEPS = ("--max_chars=20000", "--n_layer=1", "--n_embd=32", "--block_size=32", "--dropout=0",
            "--max_steps=12", "--eval_every=5", "--sample_length=20")  # 9 batches a pass


@pytest.mark.slow
def test_a_step_based_token_stream_sweeps_and_reproduces(workspace: Workspace) -> None:
    """char_lm by steps (a TokenSplit, artifacts named by step) in a 2-trial sweep, whose
    trials report at their evaluation steps; `expkit reproduce` of a trial matches it."""
    import optuna

    ws = workspace
    result = ws.run("sweep", "--experiment_id=char_lm", "--trials", "2", "--seed", "0",
                    "--space", "lr=loguniform:1e-3:1e-2", *LM_STEPS)
    assert result.returncode == 0, result.stderr
    url = f"sqlite:///{ws.results / 'sweeps' / 'char_lm' / 'study.db'}"
    trials = optuna.load_study(study_name="char_lm", storage=url).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(sorted(t.intermediate_values) == [5, 10, 12] for t in trials), \
        "a step-based trial reports at its evaluation steps"
    run = Path(trials[0].user_attrs["run_dir"])
    assert [row["step"] for row in history(run)] == ["5", "10", "12"]
    assert sorted(p.name for p in (run / "artifacts" / "sample").iterdir()) == \
        ["10.txt", "12.txt", "5.txt"], "one sample per evaluation, named by its step"
    again = ws.run("reproduce", str(run))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "every metric matches" in again.stdout and "steps_run" in again.stdout
