"""char_lm: a character-level language model (a small decoder-only Transformer) trained on
the Python standard library's own source files, which are on every machine with Python.

    python run.py --experiment_id=char_lm

The corpus is the standard library's top-level `*.py` files, sorted by name and joined, cut
at `--max_chars`; the first 90% trains, the next 5% validates and the last 5% tests (split by
position: a token stream has no examples to shuffle). It is a TokenSplit: random windows of
`--block_size` characters for training, drawn from the trainer's generator, consecutive
windows for evaluation. The character vocabulary is the dataset's state, saved in every
checkpoint, so `expkit.load_run` rebuilds a model that encodes and samples without the corpus.
Metrics: the loss (mean NLL per character, in nats), bits per character and perplexity.
After each epoch it samples `--sample_length` characters (`--temperature`, `--top_k`) into
RUN_DIR/artifacts/sample/EPOCH.txt, shown in report.html (and sent to wandb, TensorBoard).
"""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from expkit import (
    MAX_EPOCHS,
    Args,
    BaseExperiment,
    BaseModel,
    DataInfo,
    DataSplits,
    Declared,
    ExperimentArgs,
    ExpkitError,
    Metric,
    TokenSplit,
    perplexity,
    preprocess,
)


class CorpusArgs(Args):
    """Which text, and how much of it."""

    max_chars: int = Field(1_000_000, ge=1000, description="characters of the corpus to use "
                           "(the standard library's top-level sources, in name order)")


class GPTArgs(Args):
    """A small decoder-only Transformer."""

    n_layer: int = Field(2, ge=1, le=64, description="Transformer blocks")
    n_head: int = Field(4, ge=1, le=64, description="attention heads per block")
    n_embd: int = Field(128, ge=8, le=8192, description="embedding width (a multiple of n_head)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in attention and MLP outputs")
    block_size: int = Field(128, ge=2, le=1 << 16, description="context length in characters")


class SampleArgs(Args):
    """The text sampled at each evaluation (saved in RUN_DIR/artifacts/sample/)."""

    sample_length: int = Field(300, ge=0, le=100_000, description="characters sampled at each "
                               "evaluation (0 = none)")
    temperature: float = Field(0.8, gt=0, le=10, description="sampling temperature")
    top_k: int | None = Field(20, ge=1, description="sample among the k likeliest characters; "
                              "auto = all")


class CharLMArgs(ExperimentArgs):
    """The experiment's arguments: the common ones, plus the model's and the corpus'."""

    epochs: int = Field(3, ge=1, le=MAX_EPOCHS, description="number of training epochs")
    batch_size: int = Field(64, ge=1, le=1 << 24, description="training batch size (windows)")
    eval_batch_size: int = Field(256, ge=1, le=1 << 24, description="batch size for validation "
                                 "and test")
    model: GPTArgs = Field(default_factory=GPTArgs)
    dataset: CorpusArgs = Field(default_factory=CorpusArgs)
    sample: SampleArgs = Field(default_factory=SampleArgs)


def corpus_files() -> list[Path]:
    """The standard library's top-level source files, sorted by name."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


class Block(nn.Module):
    """Pre-norm Transformer block: causal self-attention, then an MLP."""

    def __init__(self, args: GPTArgs) -> None:
        super().__init__()
        self.n_head, self.dropout = args.n_head, args.dropout
        self.ln1, self.ln2 = nn.LayerNorm(args.n_embd), nn.LayerNorm(args.n_embd)
        self.qkv = nn.Linear(args.n_embd, 3 * args.n_embd)
        self.proj = nn.Linear(args.n_embd, args.n_embd)
        self.mlp = nn.Sequential(nn.Linear(args.n_embd, 4 * args.n_embd), nn.GELU(),
                                 nn.Linear(4 * args.n_embd, args.n_embd), nn.Dropout(args.dropout))
        self.drop = nn.Dropout(args.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, n_embd) -> the same shape."""
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, c)))
        return x + self.mlp(self.ln2(x))  # type: ignore[no-any-return]


class CharGPT(BaseModel):
    """Next-character logits from a window of characters; `encode`, `decode` and `generate`
    use the vocabulary it was built with (the dataset's state)."""

    def __init__(self, args: GPTArgs, chars: str) -> None:
        super().__init__()
        if args.n_embd % args.n_head:
            raise ExpkitError(f"--n_embd={args.n_embd} is not a multiple of --n_head={args.n_head}")
        self.chars, self.block_size = chars, args.block_size
        self.index = {c: i for i, c in enumerate(chars)}
        self.tok = nn.Embedding(len(chars), args.n_embd)
        self.pos = nn.Embedding(args.block_size, args.n_embd)
        self.blocks = nn.Sequential(*(Block(args) for _ in range(args.n_layer)))
        self.ln = nn.LayerNorm(args.n_embd)
        self.head = nn.Linear(args.n_embd, len(chars))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(batch, time) character ids -> (batch, time, vocabulary) logits."""
        positions = torch.arange(idx.shape[1], device=idx.device)
        return self.head(self.ln(self.blocks(self.tok(idx) + self.pos(positions))))  # type: ignore[no-any-return]

    def step(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Cross-entropy of every next character (the loss), and its sum over the batch's
        windows (-> loss, bpc, ppl: per character, every window being block_size long)."""
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        return loss, {"loss": loss.detach() * len(x)}

    def encode(self, text: str) -> torch.Tensor:
        """Character ids of `text` (characters outside the vocabulary are an error)."""
        missing = sorted(set(text) - set(self.index))
        if missing:
            raise ExpkitError(f"characters outside the vocabulary: {''.join(missing)!r}")
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        """The text of a 1-D tensor of character ids."""
        return "".join(self.chars[int(i)] for i in ids)

    @torch.no_grad()
    def generate(self, prompt: str, length: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> str:
        """`prompt` continued by `length` sampled characters."""
        device = next(self.parameters()).device
        idx = self.encode(prompt or "\n").to(device).unsqueeze(0)
        for _ in range(length):
            logits = self(idx[:, -self.block_size:])[0, -1] / max(temperature, 1e-6)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, len(logits))).values[-1]
                logits = logits.masked_fill(logits < kth, -math.inf)
            probs = torch.softmax(logits, dim=-1).cpu()
            nxt = torch.multinomial(probs, 1, generator=generator).to(device)
            idx = torch.cat([idx, nxt.unsqueeze(0)], dim=1)
        return prompt + self.decode(idx[0, len(prompt or "\n"):].cpu())


class CharLMExperiment(BaseExperiment[CharLMArgs]):
    """Character-level Transformer language model on the Python standard library's sources."""

    args_class = CharLMArgs
    metrics: ClassVar[Declared] = {
        "loss": "min",
        "bpc": Metric("min", lambda sums, n: sums["loss"] / max(n, 1) / math.log(2), ("loss",)),
        "ppl": perplexity("loss"),
    }
    default_monitor = "val_loss"
    smoke_args = ("--epochs=1", "--max_chars=20000", "--n_layer=1", "--n_embd=32",
                  "--block_size=32", "--sample_length=20")

    def build_data(self) -> DataSplits:
        """The corpus as character ids, split 90/5/5 by position; the vocabulary as state."""
        files = corpus_files()
        if not files:
            raise ExpkitError(f"no Python sources under {sysconfig.get_paths()['stdlib']}")
        text = "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        text = text[:self.args.dataset.max_chars]
        chars = "".join(sorted(set(text)))
        lookup = torch.zeros(max(map(ord, chars)) + 1, dtype=torch.long)
        lookup[torch.tensor([ord(c) for c in chars])] = torch.arange(len(chars))
        ids = lookup[torch.tensor([ord(c) for c in text])]
        n_train, n_val = int(len(ids) * 0.9), int(len(ids) * 0.05)
        block = self.args.model.block_size
        return DataSplits(None, (block,), {"chars": chars},
                          train=TokenSplit(ids[:n_train], block),
                          val=TokenSplit(ids[n_train:n_train + n_val], block),
                          test=TokenSplit(ids[n_train + n_val:], block), files=files,
                          preprocess=[preprocess.vocabulary(chars)])

    def build_model(self, data: DataInfo) -> CharGPT:
        """The Transformer, over the corpus' characters."""
        return CharGPT(self.args.model, data.state["chars"])

    def evaluation_artifacts(self, trainer: Any) -> dict[str, str | torch.Tensor]:
        """A sample after each epoch, drawn from a generator of its own (seeded by the run's
        seed and the epoch), so sampling leaves the training's random streams alone."""
        s = self.args.sample
        if not s.sample_length:
            return {}
        model: CharGPT = trainer.model
        generator = torch.Generator().manual_seed((self.args.seed or 0) * 1000 + trainer.epoch)
        was_training = model.training
        model.eval()
        text = model.generate("def ", s.sample_length, s.temperature, s.top_k, generator)
        model.train(was_training)
        return {"sample": text}
