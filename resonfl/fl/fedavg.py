"""FedAvg: the new global model is the samples-weighted mean of the sites' weights.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized Data".

Updates are folded into a running float64 sum as they arrive, so memory is one model-sized
accumulator however many sites report. Output dtypes equal the global model's dtypes:
floating tensors are cast back; integer and bool tensors (e.g. BatchNorm's
``num_batches_tracked``) get the weighted mean rounded half-to-even (``torch.round``) and cast
back — never silently turned into floats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from resonfl.fl.base import (
    Aggregator,
    InvalidUpdateError,
    NoUpdatesError,
    StateDict,
    check_compatible,
)


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.complex128 if t.is_complex() else torch.float64


def cast_like(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a float64 mean back to ``dtype``; integer/bool means are rounded half-to-even."""
    if dtype.is_floating_point or dtype.is_complex:
        return value.to(dtype)
    return torch.round(value).to(dtype)


class WeightedSum:
    """Streaming sum of ``num_samples * weights`` in float64 (one accumulator per key)."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self.total: int = 0

    def add(
        self, weights: Mapping[str, torch.Tensor], num_samples: int, scale: float = 1.0
    ) -> None:
        w = num_samples * scale
        for key, tensor in weights.items():
            t = tensor.detach().to(device="cpu", dtype=_acc_dtype(tensor))
            if key in self._sums:
                self._sums[key].add_(t, alpha=w)
            else:
                self._sums[key] = t.mul(w)  # a new tensor: never alias the caller's
        self.total += num_samples

    def add_mean(self, means: Mapping[str, torch.Tensor], weight: float) -> None:
        """Fold in already-averaged float64 tensors with a given (non-sample) weight."""
        for key, tensor in means.items():
            if key in self._sums:
                self._sums[key].add_(tensor, alpha=weight)
            else:
                self._sums[key] = tensor.mul(weight)

    def mean(self, denominator: float | None = None) -> dict[str, torch.Tensor]:
        """Float64 means (sum / total samples, or sum / ``denominator``)."""
        d = self.total if denominator is None else denominator
        if not self._sums or d <= 0:
            raise NoUpdatesError("no updates to average")
        return {k: v / d for k, v in self._sums.items()}

    def __bool__(self) -> bool:
        return bool(self._sums)


def fedavg(results: Sequence[tuple[StateDict, int]]) -> StateDict:
    """Samples-weighted mean of ``(weights, num_samples)``; dtypes follow the first result."""
    if not results:
        raise NoUpdatesError("fedavg() needs at least one (weights, num_samples)")
    template = results[0][0]
    acc = WeightedSum()
    for i, (weights, num_samples) in enumerate(results):
        if num_samples <= 0:
            raise InvalidUpdateError(f"result {i}: num_samples must be > 0, got {num_samples}")
        check_compatible(template, weights, who=f"result {i}")
        acc.add(weights, num_samples)
    means = acc.mean()
    return {k: cast_like(means[k], t.dtype) for k, t in template.items()}


class FedAvg(Aggregator):
    """Streaming FedAvg weighted by samples (the platform's default aggregator)."""

    def __init__(self, args: Any = None) -> None:
        super().__init__(args)
        self._acc = WeightedSum()

    def reset(self, global_weights: StateDict, round_num: int) -> None:
        self._begin_round(global_weights, round_num)
        self._acc = WeightedSum()

    def accept(self, site: str, weights: StateDict, num_samples: int) -> None:
        n = self._admit(site, weights, num_samples)
        self._acc.add(weights, n)

    def aggregate(self) -> StateDict:
        global_weights = self._open_global()
        if self._result is None:
            if not self._acc:
                raise NoUpdatesError(f"round {self.round_num}: no update was accepted")
            self._result = self._finish(global_weights, self._acc.mean())
        return dict(self._result)

    def _finish(self, global_weights: StateDict, means: dict[str, torch.Tensor]) -> StateDict:
        """Turn this round's float64 means into the new global weights (FedOpt overrides)."""
        return {k: cast_like(means[k], t.dtype) for k, t in global_weights.items()}


__all__ = ["FedAvg", "WeightedSum", "cast_like", "fedavg"]
