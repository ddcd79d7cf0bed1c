"""Norm clipping: FedAvg over updates whose L2 norm is capped, so no site can pull far.

Sun et al. 2019, "Can You Really Backdoor Federated Learning?". Each site's update
``delta = weights - global`` (over every floating-point tensor) is scaled down to norm
``max_norm`` when it is longer; the new global is ``global + mean(clipped deltas)``. A bad
site moves the model by at most ``max_norm x its weight``, whatever it sends; any number of
bad sites is bounded this way, none is removed (pair it with the median or Krum to outvote).

Streams like FedAvg: memory is one float64 accumulator and the update being folded.
Integer and bool buffers are averaged as in FedAvg. ``weighting="uniform"`` (the default)
gives every site one vote, so a bad site cannot buy influence by claiming more samples.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from resonfl.fl.base import Aggregator, NoUpdatesError, StateDict
from resonfl.fl.fedavg import cast_like


def update_norm(
    global_weights: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]
) -> float:
    """L2 norm of ``weights - global`` over the floating-point tensors (float64)."""
    total = 0.0
    for key, g in global_weights.items():
        if g.is_floating_point():
            d = weights[key].to(torch.float64) - g.to(torch.float64)
            total += float(d.pow(2).sum())
    return math.sqrt(total)


class ClippedSum:
    """Running sum of clipped float deltas (and plain sums of integer tensors), float64."""

    def __init__(self, global_weights: StateDict, max_norm: float) -> None:
        self.global_weights = global_weights
        self.max_norm = max_norm
        self.sums: dict[str, torch.Tensor] = {}
        self.total_weight = 0.0
        self.count = 0
        self.clipped = 0
        self.norms: list[float] = []

    def add(self, weights: Mapping[str, torch.Tensor], weight: float) -> float:
        """Fold one update; returns its norm before clipping."""
        norm = update_norm(self.global_weights, weights)
        factor = 1.0 if norm <= self.max_norm else self.max_norm / norm
        for key, g in self.global_weights.items():
            w = weights[key].detach().to(torch.float64)
            value = (w - g.to(torch.float64)) * factor if g.is_floating_point() else w
            if key in self.sums:
                self.sums[key].add_(value, alpha=weight)
            else:
                self.sums[key] = value.mul(weight)
        self.total_weight += weight
        self.count += 1
        self.clipped += factor < 1.0
        self.norms.append(norm)
        return norm


class NormClipArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_norm: float = Field(
        default=1.0,
        gt=0,
        description="C: the longest update (L2 over all float weights) a site may send; longer "
        "ones are scaled down to C. Set it near the honest sites' update norms (the job page "
        "plots their median each round)",
    )
    weighting: Literal["uniform", "samples"] = Field(
        default="uniform",
        description="uniform: one vote per site (a bad site cannot claim more samples); "
        "samples: weighted by samples as FedAvg",
    )


class NormClip(Aggregator):
    """FedAvg of updates clipped to an L2 norm (bounds every site's pull on the model)."""

    Args = NormClipArgs
    args: NormClipArgs

    def __init__(self, args: Any = None) -> None:
        super().__init__(args)
        self._sum: ClippedSum | None = None

    def reset(self, global_weights: StateDict, round_num: int) -> None:
        self._begin_round(global_weights, round_num)
        self._sum = ClippedSum(self._open_global(), self.args.max_norm)

    def accept(self, site: str, weights: StateDict, num_samples: int) -> None:
        n = self._admit(site, weights, num_samples)
        assert self._sum is not None
        self._sum.add(weights, float(n) if self.args.weighting == "samples" else 1.0)

    def aggregate(self) -> StateDict:
        global_weights = self._open_global()
        if self._result is None:
            if self._sum is None or not self._sum.count:
                raise NoUpdatesError(f"round {self.round_num}: no update was accepted")
            s = self._sum
            out: StateDict = {}
            for key, g in global_weights.items():
                mean = s.sums[key] / s.total_weight
                value = g.to(torch.float64) + mean if g.is_floating_point() else mean
                out[key] = cast_like(value, g.dtype)
            self._result = out
        return dict(self._result)

    def round_metrics(self, site_metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        if self._sum is None or not self._sum.norms:
            return {}
        return {
            "update_norm_median": statistics.median(self._sum.norms),
            "clipped_sites": float(self._sum.clipped),
        }


__all__ = ["ClippedSum", "NormClip", "NormClipArgs", "update_norm"]
