"""The same experiment in PyTorch Lightning, on the same in-memory tensors (whole-batch fetches).

    pip install lightning   # the `bench` extra
    python bench/lightning_script.py [--epochs 5] [--batch_size 64]
"""

import tempfile

import fashion_data
import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

ns = fashion_data.parse_args(__doc__)


def loader(ds: TensorDataset, batch: int, shuffle: bool) -> DataLoader:
    sampler = RandomSampler(ds) if shuffle else SequentialSampler(ds)
    # batch_size=None + a BatchSampler: each fetch is one tensor index, not per-item + collate
    return DataLoader(ds, batch_size=None, sampler=BatchSampler(sampler, batch, drop_last=False))


class Module(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))

    def training_step(self, batch, _):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def test_step(self, batch, _):
        x, y = batch
        self.log("test_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


torch.manual_seed(0)
data = fashion_data.load(ns.data)
train, val = TensorDataset(*data["train"]), TensorDataset(*data["val"])
trainer = L.Trainer(max_epochs=ns.epochs, accelerator="cpu", enable_progress_bar=False,
                    default_root_dir=tempfile.mkdtemp(), enable_model_summary=False,
                    logger=L.pytorch.loggers.CSVLogger(tempfile.mkdtemp()))
model = Module()
trainer.fit(model, loader(train, ns.batch_size, True), loader(val, 1024, False))
trainer.test(model, loader(TensorDataset(*data["test"]), 1024, False), verbose=False)
print(f"test_acc {trainer.callback_metrics['test_acc'].item():.4f}")
