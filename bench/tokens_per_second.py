"""Tokens per second of char_lm's training: expkit's step-based Trainer vs a hand-written
nanoGPT-style loop, on the same model (char_lm's CharGPT), data (the standard library's
sources) and batch, interleaved in one process.

- hand-written: nanoGPT's `get_batch` (random window starts from `torch.randint`, windows
  stacked), forward, backward, AdamW step; nothing else.
- expkit: a Trainer over a TokenSplit with `--max_steps`/`--eval_every` (each round is one
  evaluation period of `--steps` optimizer steps), with its default callbacks: checkpoint
  (last.pt) and history.csv at the period's end, console line. No validation split on either
  side, so both time training alone.

    python bench/tokens_per_second.py                       # 5 rounds of 50 steps
    python bench/tokens_per_second.py --rounds 7 --steps 100

The figure is the median over rounds of expkit's time / the hand-written loop's for the same
number of tokens (1.00 = as fast). Written to bench/out/tokens_per_second.json.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from common import interleave, summarize

from expkit import DataSplits, TokenSplit, Trainer, standard_callbacks
from lab.experiments.char_lm import CharGPT, CharLMArgs, CharLMExperiment, CorpusArgs


def main() -> None:
    """Time both sides, print the figures and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per round")
    parser.add_argument("--batch_size", type=int, default=64)
    options = parser.parse_args()
    torch.manual_seed(0)
    args = CharLMArgs(experiment_id="char_lm", dataset=CorpusArgs(max_chars=300_000))
    data = CharLMExperiment(args).build_data()
    chars, block = data.state["chars"], args.model.block_size
    assert isinstance(data.train, TokenSplit)
    tokens = data.train.tokens

    hand_model = CharGPT(args.model, chars)
    hand_opt = torch.optim.AdamW(hand_model.parameters(), lr=1e-3, fused=True)
    generator = torch.Generator().manual_seed(0)

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:  # nanoGPT's, on the CPU
        ix = torch.randint(len(tokens) - block, (options.batch_size,), generator=generator)
        x = torch.stack([tokens[i:i + block] for i in ix])
        y = torch.stack([tokens[i + 1:i + 1 + block] for i in ix])
        return x, y

    def hand_written() -> None:
        hand_model.train()
        for _ in range(options.steps):
            x, y = get_batch()
            logits = hand_model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            loss.backward()
            hand_opt.step()
            hand_opt.zero_grad(set_to_none=True)
        _ = loss.item()

    model = CharGPT(args.model, chars)
    run_dir = Path(tempfile.mkdtemp())
    trainer = Trainer(model, torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True), None,
                      DataSplits(None, (block,), train=data.train, val=None, test=None),
                      epochs=1, batch_size=options.batch_size, eval_batch_size=256,
                      device=torch.device("cpu"), seed=0, monitor="train_loss",
                      monitor_mode="min", max_steps=0, eval_every=options.steps,
                      callbacks=standard_callbacks(run_dir, io.StringIO())[:2])  # line, last.pt

    def expkit() -> None:
        trainer.max_steps = (trainer.max_steps or 0) + options.steps
        trainer.fit()

    times = interleave({"expkit": expkit, "hand_written": hand_written}, options.rounds)
    stats = summarize(times, "expkit", "hand_written")
    tokens_per_round = options.steps * options.batch_size * block
    for side in ("expkit", "hand_written"):
        stats[side]["tokens_per_s"] = tokens_per_round / stats[side]["median"]
        print(f"{side:13s} {stats[side]['tokens_per_s']:,.0f} tokens/s  "
              f"(median {stats[side]['median']:.3f}s per {options.steps} steps)")
    print(f"expkit / hand-written time: x{stats['ratio_median']:.3f} (median of {options.rounds} "
          f"interleaved rounds; model {args.model.n_layer} layers x {args.model.n_embd}, "
          f"block {block}, batch {options.batch_size})")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "tokens_per_second.json").write_text(json.dumps(
        {"options": vars(options), "tokens_per_round": tokens_per_round, **stats}, indent=2))


if __name__ == "__main__":
    main()
