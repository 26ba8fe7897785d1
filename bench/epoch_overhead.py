"""Seconds per epoch, interleaved in one process on the same data and model (MLP 784-64-10, Adam):

- hand-written: one randperm, whole-batch slices of one in-memory tensor (the baseline);
- expkit: its Trainer with the defaults on (checkpoints, history.csv, history.png within
  its time budget, console line);
- dataloader: the torchvision-style per-item DataLoader (TensorDataset + collate);
- lightning: PyTorch Lightning over the same tensors with whole-batch fetches (if installed).

    python bench/epoch_overhead.py                     # batch 64 and 512, 5 rounds each
    python bench/epoch_overhead.py --batch_sizes 64 --rounds 7 --no-dataloader

All sides train and then run a validation pass. Data: real Fashion-MNIST when installed,
otherwise generated (said in the output). Figures go to bench/out/epoch_overhead.json.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import expkit_trainer, fmt, interleave, load_data, mlp, one_more_epoch, summarize
from torch.utils.data import DataLoader, TensorDataset

from expkit import DataSplits
from lab.models.mlp import MLP


def hand_written_epoch(model: MLP, opt: torch.optim.Optimizer, data: DataSplits, batch: int,
                       g: torch.Generator) -> None:
    """What a researcher writes by hand: the baseline."""
    model.train()
    x, y = data.train.x, data.train.y
    loss_sum, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
    order = torch.randperm(len(x), generator=g)
    for start in range(0, len(x), batch):
        idx = order[start:start + batch]
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum += loss.detach() * len(yb)
        correct += (logits.argmax(1) == yb).sum()
    _ = (loss_sum / len(x)).item(), (correct / len(x)).item()
    model.eval()
    assert data.val is not None
    with torch.inference_mode():
        for start in range(0, len(data.val), 1024):
            model(data.val.x[start:start + 1024])


def dataloader_epoch(model: MLP, opt: torch.optim.Optimizer, loader: DataLoader,
                     data: DataSplits) -> None:
    """The per-item DataLoader loop (what a torchvision-style dataset gives)."""
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    assert data.val is not None
    with torch.inference_mode():
        for start in range(0, len(data.val), 1024):
            model(data.val.x[start:start + 1024])


def lightning_epoch_fn(data: DataSplits, batch: int) -> Callable[[], None] | None:
    """One more Lightning epoch per call over the same tensors, or None without lightning."""
    try:
        import lightning as L
    except ImportError:
        return None
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(data)

        def training_step(self, b: Any, _: int) -> torch.Tensor:
            logits = self.net(b[0])
            loss = F.cross_entropy(logits, b[1])
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def validation_step(self, b: Any, _: int) -> None:
            self.log("val_acc", (self.net(b[0]).argmax(1) == b[1]).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    assert data.val is not None
    train = TensorDataset(data.train.x, data.train.y)
    val = TensorDataset(data.val.x, data.val.y)
    train_loader = DataLoader(train, batch_size=None,
                              sampler=BatchSampler(RandomSampler(train), batch, drop_last=False))
    val_loader = DataLoader(val, batch_size=None,
                            sampler=BatchSampler(SequentialSampler(val), 1024, drop_last=False))
    module = Module()

    def one_epoch() -> None:  # a fresh Trainer each round: its setup is part of the time
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(module, train_loader, val_loader)

    return one_epoch


def main() -> None:
    """Run the interleaved rounds and print/write the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/out/epoch_overhead.json"))
    parser.add_argument("--no-dataloader", dest="dataloader", action="store_false",
                        help="skip the slow per-item DataLoader side")
    ns = parser.parse_args()
    data, source = load_data()
    print(f"data: {source}, {len(data.train)} train examples; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results = {}
    for batch in ns.batch_sizes:
        trainer = expkit_trainer(data, batch)
        ref = mlp(data)
        ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        sides: dict[str, Callable[[], None]] = {
            "hand": lambda: hand_written_epoch(ref, ref_opt, data, batch, g),
            "expkit": lambda: one_more_epoch(trainer)}
        if ns.dataloader:
            per_item = mlp(data)
            per_item_opt = torch.optim.Adam(per_item.parameters(), lr=1e-3)
            loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=batch,
                                shuffle=True)
            sides["dataloader"] = lambda: dataloader_epoch(per_item, per_item_opt, loader, data)
        lightning = lightning_epoch_fn(data, batch)
        if lightning is not None:
            sides["lightning"] = lightning
        times = interleave(sides, ns.rounds)
        summary = {name: summarize(times, name, "hand") for name in sides if name != "hand"}
        row = {"hand": summary["expkit"]["hand"]}
        row.update({name: {**stats[name], "ratio_to_hand": stats["ratio_median"]}
                    for name, stats in summary.items()})
        results[f"batch_{batch}"] = row
        print(f"batch {batch:>4}: {fmt('hand-written', row['hand'])}")
        for name in summary:
            print(f"            {fmt(name, row[name])}  x{row[name]['ratio_to_hand']:.3f} of "
                  "hand-written (median of rounds)")
        if "lightning" not in sides:
            print("            lightning: not installed (pip install lightning), skipped")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"data": source, "rounds": ns.rounds, "results": results}, indent=2))
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
