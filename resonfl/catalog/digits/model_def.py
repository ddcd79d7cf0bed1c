"""Digits: scikit-learn's 8x8 handwritten digits with a small CNN (a ResonFL catalog job).

DATA_ROOT holds train.npz and val.npz (X: float32 (N, 1, 8, 8) in [0, 1], y: int64).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset


class DigitsCNN(nn.Module):
    """Two conv stages (8x8 → 4x4 → 2x2) and a linear head."""

    def __init__(self, width: int = 32, num_classes: int = 10, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 4, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_dataset(root: Path, split: str) -> TensorDataset:
    """``root/<split>.npz`` as a TensorDataset."""
    with np.load(Path(root) / f"{split}.npz") as data:
        x = torch.from_numpy(np.asarray(data["X"], dtype=np.float32).reshape(-1, 1, 8, 8))
        y = torch.from_numpy(np.asarray(data["y"], dtype=np.int64))
    return TensorDataset(x, y)


def fl_evaluate_model(model, env, logger):
    """The received global model on this site's own validation split."""
    return env.evaluate(model, load_dataset(env.data_root, "val"))


def fl_train_model(model, env, out_dir, logger):
    """One round of local training with the executor's standard loop."""
    train = load_dataset(env.data_root, "train")
    logger.info("training on %d samples", len(train))
    return env.fit(model, train, load_dataset(env.data_root, "val"))
