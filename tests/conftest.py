"""Shared fixtures: a tiny model_def.py that any test can render into a job."""

from __future__ import annotations

import textwrap

import pytest

TINY_MODEL_DEF = textwrap.dedent(
    '''
    """A two-layer model on random data: enough to exercise the platform quickly."""
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, width: int = 8):
            super().__init__()
            self.fc1 = nn.Linear(4, width)
            self.bn = nn.BatchNorm1d(width)
            self.fc2 = nn.Linear(width, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.bn(self.fc1(x))))


    def fl_train_model(model, env, out_dir, logger):
        torch.manual_seed(0)
        x = torch.randn(32, 4)
        y = torch.randint(0, 3, (32,))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        logger.info("trained on %d samples", len(x))
        return {"samples": len(x), "metrics": {"train_loss": float(loss)}}
    '''
).lstrip()


@pytest.fixture
def tiny_model_def() -> str:
    return TINY_MODEL_DEF
