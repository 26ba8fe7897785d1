"""Token streams: windows of a 1-D token tensor (next-token pairs), drawn from the trainer's
generator, the same across a resume; the char_lm example stopped mid-epoch resumes exactly."""

from __future__ import annotations

import html
import subprocess
import sys

import pytest
import torch

import expkit
from conftest import REPO, Workspace
from expkit.data.base import TokenSplit
from expkit.training.checkpoint import load_checkpoint
from test_resume import HOOKS, assert_same_training


def test_windows_are_next_token_pairs_consecutive_in_evaluation() -> None:
    tokens = torch.arange(100)
    split = TokenSplit(tokens, block_size=8)
    assert len(split) == 12 and split.num_batches(5) == 3  # (100 - 1) // 8 windows
    batches = list(split.batches(5))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == y.shape == (12, 8)
    assert torch.equal(x.flatten(), tokens[:96]) and torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="more than block_size=8 tokens, got 8"):
        TokenSplit(torch.arange(8), 8)
    with pytest.raises(TypeError, match="split by position"):
        split.take(torch.arange(3))


def test_random_windows_come_from_the_generator_and_a_resume_draws_the_same() -> None:
    split = TokenSplit(torch.arange(1000) * 3, block_size=16)
    state = torch.Generator().manual_seed(7).get_state()

    def windows(skip: int = 0, shard: tuple[int, int] = (0, 1)) -> list[torch.Tensor]:
        generator = torch.Generator()
        generator.set_state(state)
        return [x for x, _ in split.batches(10, generator, skip, shard)]

    full = windows()
    assert len(full) == split.num_batches(10) and all(torch.equal(y, x + 3) for x, y in
                                                     split.batches(10, torch.Generator()))
    starts = torch.cat([w[:, 0] for w in full]) // 3
    assert len(set(starts.tolist())) > 40 and int(starts.max()) <= 1000 - 17, "any start that fits"
    assert all(torch.equal(a, b) for a, b in zip(windows(skip=4), full[4:], strict=True)), \
        "a pass resumed after 4 batches draws the windows the uninterrupted pass drew"
    halves = [windows(shard=(rank, 2)) for rank in (0, 1)]
    assert all(torch.equal(torch.cat([a, b]).sort(0).values, whole.sort(0).values)
               for a, b, whole in zip(*halves, full, strict=True)), "ranks split each batch"


CHAR_LM = ("--experiment_id=char_lm", "--epochs=2", "--seed=0", "--max_chars=20000",
           "--n_layer=1", "--n_embd=32", "--block_size=32", "--dropout=0.1")
STEPS = 9  # 18,000 training characters: 562 windows of 32, batches of 64


@pytest.mark.slow
def test_char_lm_stopped_mid_epoch_resumes_to_the_same_numbers(workspace: Workspace) -> None:
    ws = workspace
    assert ws.run(*CHAR_LM).returncode == 0
    reference = ws.last_run("char_lm")
    # stopped 4 batches into the second epoch: the resume draws the rest of that epoch's windows
    stopped = ws.fork(*CHAR_LM, env={"PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": f"step:{STEPS + 4}:INT"})
    assert stopped.returncode == 130, stopped.stderr
    run = next(r for r in ws.run_dirs("char_lm") if r != reference)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["partial"]["batches"] == 4
    resumed = ws.run("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_training(reference, run)
    samples = {p.name: p.read_text() for p in (run / "artifacts" / "sample").iterdir()}
    assert samples.keys() == {"1.txt", "2.txt"} and all(s.startswith("def ") for s in samples.values())
    assert samples == {p.name: p.read_text() for p in (reference / "artifacts" / "sample").iterdir()}, \
        "the samples of a resumed run are the uninterrupted run's"
    assert html.escape(samples["2.txt"]) in (run / "report.html").read_text(), "shown in the report"

    # the vocabulary is in the checkpoint: the model encodes and samples without the corpus
    loaded = expkit.load_run(run)
    text = loaded.model.generate("def ", 20, temperature=0.8, top_k=10,
                                 generator=torch.Generator().manual_seed(0))
    assert text.startswith("def ") and len(text) == 24
    assert set(text) <= set(loaded.model.chars)
    sampled = subprocess.run([sys.executable, str(REPO / "wild_west" / "sample_char_lm.py"), str(run),
                              "--prompt=import ", "--length=30"], cwd=ws.root, env=ws.env,
                             capture_output=True, text=True, timeout=120)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith("import ") and len(sampled.stdout.rstrip("\n")) >= 30


def test_artifacts_go_to_wandb_and_tensorboard(workspace: Workspace) -> None:
    pytest.importorskip("wandb")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from wandb_reader import read_wandb_history

    ws = workspace
    result = ws.fork("--experiment_id=char_lm", "--epochs=2", "--seed=0", "--max_chars=20000",
                    "--n_layer=1", "--n_embd=32", "--block_size=32", "--sample_length=40",
                    "--use_wandb=true", "--use_tensorboard=true", env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr
    run = ws.last_run("char_lm")
    samples = [(run / "artifacts" / "sample" / f"{epoch}.txt").read_text() for epoch in (1, 2)]
    (offline,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    logged = [row for row in read_wandb_history(offline) if "artifacts/sample/_type" in row]
    assert [(row["_step"], row["artifacts/sample/_type"]) for row in logged] == [
        (1, "html-file"), (2, "html-file")], "one HTML media per evaluation, at its epoch"
    pages = sorted(offline.parent.glob("files/media/html/artifacts/sample_*.html"),
                   key=lambda p: int(p.stem.split("_")[1]))
    assert [html.escape(s) in p.read_text() for s, p in zip(samples, pages, strict=True)] == [True, True]
    events = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    texts = events.Tensors("artifacts/sample/text_summary")
    assert [e.step for e in texts] == [1, 2]
    assert samples[1].splitlines()[0] in texts[1].tensor_proto.string_val[0].decode()
