"""torchrun: 2 ranks with gloo on CPU train like one process, write one run directory, stop and resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import REPO, Workspace, merged_env, write_idx_set
from expkit.engine.loading import load_run

# 1200 examples -> 1080 train (val_fraction 0.1)
FLAGS = ("--experiment_id=mnist", "--seed=0", "--hidden_sizes=[32]")
HOOKS = str(Path(__file__).parent / "hooks")  # sitecustomize.py: each rank logs what it writes


def torchrun(ws: Workspace, *args: str, nproc: int = 2, env: dict[str, str] | None = None,
             **popen: object) -> subprocess.Popen[str]:
    """`torchrun --standalone --nproc_per_node=N run.py ARGS` in the workspace (1 thread per rank)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(REPO / "run.py"), *args]
    return subprocess.Popen(cmd, cwd=ws.root, env=merged_env({**ws.env, "OMP_NUM_THREADS": "1"}, env),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            **popen)  # type: ignore[call-overload]


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


@pytest.fixture
def ddp_workspace(workspace: Workspace) -> Workspace:
    write_idx_set(workspace.cache / "mnist", n_train=1200, n_test=200)
    return workspace


def history(run_dir: Path) -> list[dict[str, float]]:
    return load_run(run_dir, "last", registry="lab.registry").history


@pytest.mark.slow
def test_two_ranks_write_one_run_that_matches_one_process(ddp_workspace: Workspace) -> None:
    ws = ddp_workspace
    # batch 61 is odd: every global batch splits 31/30 between the ranks and the last one
    # (1080 = 17 x 61 + 43) 22/21, so each rank's loss must be weighted by its share
    writes = ws.root.parent / "writes-{rank}.log"
    code, out = finish(torchrun(ws, *FLAGS, "--batch_size=61", "--epochs=3",
                                env={"PYTHONPATH": HOOKS, "EXPKIT_TEST_WRITES": str(writes)}))
    assert code == 0, out
    rank0 = Path(str(writes).replace("{rank}", "0")).read_text()
    assert "history.csv" in rank0 and "last.pt" in rank0, "the write log sees rank 0's files"
    rank1 = Path(str(writes).replace("{rank}", "1"))
    assert not rank1.exists(), f"rank 1 must write nothing: {rank1.read_text()[:500]}"
    runs = ws.run_dirs()
    assert len(runs) == 1, f"expected one run directory, got {runs}"
    ddp_run = runs[0]
    record = json.loads((ddp_run / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert out.count("run directory:") == 1, "only rank 0 prints"

    single = ws.fork(*FLAGS, "--batch_size=61", "--epochs=3")
    assert single.returncode == 0, single.stderr
    one_run = next(r for r in ws.run_dirs() if r != ddp_run)

    # Same global batch, same permutation: the ranks' gradients averaged by DDP equal the
    # one-process batch gradient up to float summation order (~1e-7 relative per step), so
    # after 54 steps every metric agrees far inside 1e-4 (unweighted rank means would not).
    ddp_hist, one_hist = history(ddp_run), history(one_run)
    assert len(ddp_hist) == len(one_hist) == 3
    for a, b in zip(ddp_hist, one_hist, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
    ddp_test, one_test = ws.metrics(ddp_run)["test"], ws.metrics(one_run)["test"]
    assert ddp_test["test_acc"] == pytest.approx(one_test["test_acc"], abs=1e-4)

    # the checkpoint holds the plain model: a single process loads it without DDP
    loaded = load_run(ddp_run, registry="lab.registry")
    state = torch.load(ddp_run / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["model"])
    assert loaded.model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_the_job_with_a_resumable_checkpoint(
        ddp_workspace: Workspace) -> None:
    ws = ddp_workspace
    # global batch 16: 68 steps an epoch; rank 1 alone gets SIGTERM at its step 75 (epoch 2)
    proc = torchrun(ws, *FLAGS, "--batch_size=16", "--epochs=4",
                    env={"PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": "step:75:TERM",
                         "EXPKIT_TEST_RANK": "1"})
    code, out = finish(proc)
    assert code != 0
    run_dir = ws.run_dirs()[0]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "stopped", out
    assert record["exit_code"] == 143
    assert "stopped by SIGTERM" in out
    assert str(REPO / "src") not in out, "a rank printed a traceback"
    stopped_at = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert stopped_at["epoch"] == 1 and stopped_at["partial"], "stopped in epoch 2: a mid-epoch checkpoint"
    assert 75 <= stopped_at["global_step"] <= 76, "all ranks stop at the step the signal came"

    # resume under torchrun, with a shorter goal so the test ends quickly
    goal = stopped_at["epoch"] + 1
    code, out = finish(torchrun(ws, "--resume=" + str(run_dir), f"--epochs={goal}"))
    assert code == 0, out
    assert len(ws.run_dirs()) == 1
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["resumes"][-1]["distributed"]["world_size"] == 2
    assert [row["epoch"] for row in history(run_dir)] == list(range(1, goal + 1))

    # and in one process, without torchrun: the same global batch, on one rank
    single = ws.cli("resume", str(run_dir), f"--epochs={goal + 1}", entry="expkit")
    assert single.returncode == 0, single.stderr
    assert [row["epoch"] for row in history(run_dir)] == list(range(1, goal + 2))
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and "distributed" not in record["resumes"][-1]
    # the record names what the run finally is: one process, and each segment's count
    assert record["distributed"] is None
    assert [s["processes"] for s in record["segments"]] == [2, 2, 1]
    assert f"--epochs={goal + 1}" in record["command"] and "--epochs=4" not in record["command"]


@pytest.mark.slow
def test_a_torchmetrics_metric_monitors_and_is_reduced_over_two_ranks(workspace: Workspace) -> None:
    """breast_cancer's AUROC and F1 are torchmetrics objects fed from a NamedSplit: under two
    gloo ranks each rank sees half of every evaluated split, and the values must still be
    those of the whole split (the objects gather their state), equal to one process's."""
    ws = workspace
    flags = ("--experiment_id=breast_cancer", "--seed=0", "--epochs=3", "--batch_size=32", "--dropout=0",
             "--monitor=val_auroc")
    # "--": torchrun would read --monitor as an abbreviation of its own --monitor-interval
    code, out = finish(torchrun(ws, "--", *flags))
    assert code == 0, out
    ddp_run = ws.run_dirs("breast_cancer")[0]
    single = ws.fork(*flags)
    assert single.returncode == 0, single.stderr
    one_run = next(r for r in ws.run_dirs("breast_cancer") if r != ddp_run)
    ddp_hist, one_hist = history(ddp_run), history(one_run)
    for a, b in zip(ddp_hist, one_hist, strict=True):
        for key in ("val_f1", "val_auroc", "val_loss"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), f"{key}: 2 ranks {a[key]}, 1 process {b[key]}"
    metrics = ws.metrics(ddp_run)
    aurocs = [row["val_auroc"] for row in ddp_hist]
    assert metrics["best_epoch"] == aurocs.index(max(aurocs)) + 1, "the best epoch is val_auroc's max"

    # the test AUROC is the whole test split's, as scikit-learn computes it from the best weights
    from sklearn.metrics import roc_auc_score

    loaded = load_run(ddp_run, registry="lab.registry")
    test = loaded.experiment.build_data().test
    assert test is not None
    assert loaded.evaluate(test)["test_auroc"] == pytest.approx(metrics["test"]["test_auroc"])
    with torch.no_grad():
        prob = loaded.model.predict(test["x"])
    expected = roc_auc_score(test["y"].numpy(), prob.numpy())
    assert metrics["test"]["test_auroc"] == pytest.approx(expected, abs=1e-5)


def two_ranks_and_one_process(ws: Workspace, experiment_id: str, flags: tuple[str, ...]
                              ) -> tuple[Path, Path]:
    """The run directories of `flags` under torchrun (2 ranks: exactly one directory) and in
    one process."""
    code, out = finish(torchrun(ws, *flags))
    assert code == 0, out
    (ddp_run,) = ws.run_dirs(experiment_id)
    single = ws.fork(*flags)
    assert single.returncode == 0, single.stderr
    return ddp_run, next(r for r in ws.run_dirs(experiment_id) if r != ddp_run)


@pytest.mark.slow
def test_step_based_token_windows_under_two_ranks_match_one_process(workspace: Workspace) -> None:
    """char_lm by steps over a TokenSplit: the windows of every global batch are drawn once
    and split between the ranks, so with dropout off 2 ranks train like one process (the
    per-step gradient agrees up to float summation order: 1e-4 after 12 steps), evaluate at
    the same steps, and rank 0 alone writes the run directory and its samples."""
    ws = workspace
    flags = ("--experiment_id=char_lm", "--seed=0", "--max_chars=20000", "--n_layer=1",
             "--n_embd=32", "--block_size=32", "--dropout=0", "--max_steps=12", "--eval_every=5",
             "--sample_length=20")
    ddp_run, one_run = two_ranks_and_one_process(ws, "char_lm", flags)
    ddp_hist, one_hist = history(ddp_run), history(one_run)
    assert [row["step"] for row in ddp_hist] == [row["step"] for row in one_hist] == [5, 10, 12]
    for a, b in zip(ddp_hist, one_hist, strict=True):
        for key in ("train_loss", "val_loss", "val_bpc"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), f"{key}: 2 ranks {a[key]}, 1 process {b[key]}"
    assert sorted(p.name for p in (ddp_run / "artifacts" / "sample").iterdir()) == \
        ["10.txt", "12.txt", "5.txt"]


@pytest.mark.slow
def test_augmented_training_under_two_ranks(ddp_workspace: Workspace) -> None:
    """fashion_aug under 2 ranks: each rank augments its own shard (its generator is seeded
    with its rank) and batch norm normalizes each rank's half-batch, so the numbers are not
    one process's exactly; on the learnable generated digits both reach the same test
    accuracy within 0.05, in one run directory."""
    ws = ddp_workspace
    # no crops: a shift of the generated digits' bands would change their class; flips only
    flags = ("--experiment_id=fashion_aug", "--dataset=mnist", "--seed=0", "--epochs=6",
             "--channels=[8,16]", "--batch_size=64", "--crop_padding=0", "--scheduler=none",
             "--lr=0.01")
    ddp_run, one_run = two_ranks_and_one_process(ws, "fashion_aug", flags)
    ddp_acc, one_acc = (ws.metrics(r)["test"]["test_acc"] for r in (ddp_run, one_run))
    assert ddp_acc == pytest.approx(one_acc, abs=0.05) and one_acc > 0.9
    assert len(list((ddp_run / "artifacts" / "augmented").iterdir())) == 6, "one grid an epoch"


def two_node_agents(ws: Workspace, *args: str) -> tuple[list[subprocess.Popen[str]], Any]:
    """Two torchrun agents, one process each, meeting by c10d rendezvous on 127.0.0.1: two
    nodes as a cluster makes them, on one machine. The rendezvous store is this process's (a
    cluster's is a long-lived one), returned to be kept until both agents end: were it one
    agent's, that agent's exit would cut the other off in its last poll (exit 1)."""
    import torch.distributed as dist

    from conftest import free_port

    port = free_port()
    store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    endpoint = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=expkit-two-nodes",
           str(REPO / "run.py"), *args]
    return [subprocess.Popen(cmd, cwd=ws.root, env={**ws.env, "OMP_NUM_THREADS": "1"}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)], store


@pytest.mark.slow
def test_two_nodes_make_one_run_with_two_processes_numbers(ddp_workspace: Workspace) -> None:
    """--nnodes=2 (one process a node) writes one run directory, whose numbers are those of
    two processes on one node: the same ranks, batches and reductions, wherever they run."""
    ws = ddp_workspace
    flags = (*FLAGS, "--batch_size=61", "--epochs=2")
    agents, store = two_node_agents(ws, *flags)
    for agent in agents:
        code, out = finish(agent)
        assert code == 0, out
    del store
    (nodes_run,) = ws.run_dirs()
    record = json.loads((nodes_run / "run.json").read_text())
    assert record["status"] == "finished" and record["distributed"]["world_size"] == 2
    code, out = finish(torchrun(ws, *flags))
    assert code == 0, out
    one_node = next(r for r in ws.run_dirs() if r != nodes_run)
    timing = ("_time", "_per_second")
    assert [{k: v for k, v in row.items() if not k.endswith(timing)} for row in history(nodes_run)] == \
        [{k: v for k, v in row.items() if not k.endswith(timing)} for row in history(one_node)]
    assert ws.metrics(nodes_run)["test"] == ws.metrics(one_node)["test"]
