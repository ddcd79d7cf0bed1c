"""Tabular: scikit-learn's breast-cancer set with an MLP (a ResonFL catalog job).

DATA_ROOT holds train.npz and val.npz (X: raw float32 features, y: int64). Features are
standardized inside the model by `input_mean` / `input_std` buffers: in round 0 each site
sets them from its own train split, FedAvg averages them (weighted by samples), and from
round 1 every site uses the federation's shared statistics, so no raw data leaves a site.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset


class TabularMLP(nn.Module):
    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(
        self, in_features: int = 30, hidden: int = 64, num_classes: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(in_features))
        self.register_buffer("input_std", torch.ones(in_features))
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    @torch.no_grad()
    def fit_input_stats(self, x: torch.Tensor) -> None:
        self.input_mean.copy_(x.mean(dim=0))
        self.input_std.copy_(x.std(dim=0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.input_mean) / self.input_std)


def load_dataset(root: Path, split: str) -> TensorDataset:
    with np.load(Path(root) / f"{split}.npz") as data:
        x = torch.from_numpy(np.asarray(data["X"], dtype=np.float32))
        y = torch.from_numpy(np.asarray(data["y"], dtype=np.int64))
    return TensorDataset(x, y)


def fl_evaluate_model(model, env, logger):
    if env.current_round == 0:
        return {}  # the initial model has no input statistics yet
    return env.evaluate(model, load_dataset(env.data_root, "val"))


def fl_train_model(model, env, out_dir, logger):
    train = load_dataset(env.data_root, "train")
    if env.current_round == 0:
        model.fit_input_stats(train.tensors[0].to(next(model.parameters()).device))
        logger.info("set input statistics from %d local samples", len(train))
    return env.fit(model, train, load_dataset(env.data_root, "val"))
