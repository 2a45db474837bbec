"""A user's own trainable: a small torch MLP regressing a noisy 1-d function it generates itself.

``train(config)`` is an ordinary Ray Tune function trainable: it restores its checkpoint when Tune
hands it one, trains one epoch at a time up to ``config["max_epochs"]`` (set by hpo-node from
``[algorithm] max_resource``), and reports ``epoch`` and ``val_loss`` with a checkpoint every epoch.
Nothing here depends on hpo_node.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune
from torch import nn

CHECKPOINT_VERSION = 1


def make_data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``y = sin(3x) + 0.3 x^2 + noise`` on ``x`` in [-2, 2]: train and validation halves."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 4 - 2
    y = torch.sin(3 * x) + 0.3 * x**2 + 0.1 * torch.randn(n, 1, generator=g)
    return x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :]


def build(config: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
    width = int(config["width"])
    with torch.random.fork_rng():  # seeded weights; the process's generator is left as it was
        torch.manual_seed(int(config.get("seed", 0)))
        model = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                              nn.Linear(width, 1))
    opt = torch.optim.Adam(model.parameters(), lr=float(config["lr"]),
                           weight_decay=float(config["weight_decay"]))
    return model, opt


def train(config: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    x_tr, y_tr, x_va, y_va = make_data(seed=int(config.get("data_seed", 0)))
    model, opt = build(config)
    epoch = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "state.pt")
        if state["version"] != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version must be {CHECKPOINT_VERSION}, got {state['version']}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch = state["epoch"]
    batch = int(config["batch_size"])
    loss_fn = nn.MSELoss()
    while epoch < int(config["max_epochs"]):
        perm = torch.randperm(x_tr.shape[0], generator=torch.Generator().manual_seed(epoch))
        for i in range(0, x_tr.shape[0], batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss_fn(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        epoch += 1
        with torch.no_grad():
            val = float(loss_fn(model(x_va), y_va))
        with tempfile.TemporaryDirectory() as d:
            torch.save({"version": CHECKPOINT_VERSION, "epoch": epoch, "model": model.state_dict(),
                        "optimizer": opt.state_dict()}, Path(d) / "state.pt")
            tune.report({"epoch": epoch, "val_loss": val if math.isfinite(val) else math.inf},
                        checkpoint=tune.Checkpoint.from_directory(d))
