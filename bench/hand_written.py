"""The baseline a researcher writes by hand: Fashion-MNIST MLP, 5 epochs, in-memory tensors.

    python bench/hand_written.py [--epochs 5] [--batch_size 64]
"""


import fashion_data
import torch
import torch.nn.functional as F
from torch import nn

ns = fashion_data.parse_args(__doc__)

torch.manual_seed(0)
data = fashion_data.load(ns.data)
(x, y), (xv, yv), (xt, yt) = data["train"], data["val"], data["test"]
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(ns.epochs):
    model.train()
    perm = torch.randperm(len(x))
    for i in range(0, len(x), ns.batch_size):
        idx = perm[i:i + ns.batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        val_acc = (model(xv).argmax(1) == yv).float().mean().item()
    print(f"epoch {epoch + 1} val_acc {val_acc:.4f}")
with torch.no_grad():
    print(f"test_acc {(model(xt).argmax(1) == yt).float().mean().item():.4f}")
