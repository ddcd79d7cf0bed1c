"""DP-FedAvg: site-level differential privacy added by the server.

McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models" (DP-FedAvg
with flat clipping). Each round:

    delta_k  = weights_k - global, over every floating-point tensor (buffers included)
    clipped  = delta_k x min(1, S / ||delta_k||)            S = clip_norm
    new      = global + (sum_k clipped_k + N(0, (z S)^2 I)) / n     z = noise_multiplier

Every site weighs the same (a sample-weighted sum would let one site's weight, not just its
update, change the sum). Integer buffers (BatchNorm's batch counter) keep the global's value:
they would count the sites' batches, which is data. The guarantee is site-level: the
sequence of released global models is (epsilon, delta)-DP with respect to adding or removing
one site's whole dataset, epsilon from the RDP accountant (`resonfl.fl.accountant`) over
``round + 1`` Gaussian steps at sampling rate q. ScatterAndGather asks every site every
round (q = 1, no amplification) unless its ``sites_per_round`` k draws k of the N sites at
random each round: then q = k / N, accounted as the sampled Gaussian mechanism (Poisson
sampling at rate q, as McMahan et al. and TensorFlow Privacy account fixed-size uniform
sampling: an approximation, documented in docs/privacy.md). The server itself sees each site's clipped update in the clear: DP-FedAvg
protects against whoever sees the models (sites, downloaders), not against the server.

Streams like FedAvg (one float64 accumulator). Noise comes from a generator seeded by the OS
(``secrets``) at every aggregation; a re-run aggregation (the platform's crash recovery)
draws new noise. ``target_epsilon``: the job stops after the last round within it (its
model is the final one), and a round that would exceed it is never released.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from resonfl.fl.accountant import epsilon
from resonfl.fl.base import Aggregator, FLError, NoUpdatesError, StateDict
from resonfl.fl.clipping import ClippedSum
from resonfl.fl.fedavg import cast_like



class PrivacyBudgetError(FLError, RuntimeError):
    """Releasing this round would spend more than the job's target epsilon."""


class DPFedAvgArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_norm: float = Field(
        default=1.0,
        gt=0,
        description="S: each site's update (L2 over all float weights) is cut to this norm",
    )
    noise_multiplier: float = Field(
        default=1.0,
        ge=0,
        description="z: Gaussian noise of std z x S is added to the sum of the clipped updates",
    )
    delta: float = Field(
        default=1e-5, gt=0, lt=1, description="delta of the (epsilon, delta) guarantee"
    )
    target_epsilon: float | None = Field(
        default=None,
        gt=0,
        description="stop the job after the last round whose epsilon stays within this; "
        "blank = run every round and report epsilon",
    )


def round_epsilon(args: DPFedAvgArgs, round_num: int, sample_rate: float = 1.0) -> float:
    """Site-level epsilon once rounds 0..round_num have been released, each asking a share
    ``sample_rate`` of the sites drawn at random."""
    return epsilon([(args.noise_multiplier, sample_rate, round_num + 1)], args.delta)


class DPFedAvg(Aggregator):
    """DP-FedAvg: clipped site updates, Gaussian noise on their sum (site-level DP)."""

    Args = DPFedAvgArgs
    args: DPFedAvgArgs

    def __init__(self, args: Any = None) -> None:
        super().__init__(args)
        self._sum: ClippedSum | None = None
        self._epsilon: float | None = None

    def reset(self, global_weights: StateDict, round_num: int) -> None:
        self._begin_round(global_weights, round_num)
        self._sum = ClippedSum(self._open_global(), self.args.clip_norm)
        self._epsilon = None

    def accept(self, site: str, weights: StateDict, num_samples: int) -> None:
        self._admit(site, weights, num_samples)
        assert self._sum is not None
        self._sum.add(weights, 1.0)

    def aggregate(self) -> StateDict:
        global_weights = self._open_global()
        if self._result is None:
            if self._sum is None or not self._sum.count:
                raise NoUpdatesError(f"round {self.round_num}: no update was accepted")
            spent = round_epsilon(self.args, int(self.round_num or 0), self.sample_rate)
            target = self.args.target_epsilon
            if target is not None and spent > target:
                raise PrivacyBudgetError(
                    f"round {self.round_num}: releasing it would spend epsilon {spent:.3g} > "
                    f"target_epsilon {target:g} (delta {self.args.delta:g}); raise "
                    "noise_multiplier or the target, or run fewer rounds"
                )
            self._result = self._noisy_mean(global_weights, self._sum)
            self._epsilon = spent
        return dict(self._result)

    def _noisy_mean(self, global_weights: StateDict, s: ClippedSum) -> StateDict:
        generator = torch.Generator().manual_seed(secrets.randbits(63))
        std = self.args.noise_multiplier * self.args.clip_norm
        out: StateDict = {}
        for key, g in global_weights.items():
            if not g.is_floating_point():
                out[key] = g.clone()
                continue
            total = s.sums[key]
            if std > 0:
                noise = torch.randn(total.shape, generator=generator, dtype=torch.float64)
                total = total + noise * std
            out[key] = cast_like(g.to(torch.float64) + total / s.count, g.dtype)
        return out

    def round_metrics(self, site_metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        if self._sum is None or self._epsilon is None:
            return {}
        metrics = {
            "dp_delta": self.args.delta,
            "dp_sample_rate": self.sample_rate,
            "dp_noise_std": self.args.noise_multiplier * self.args.clip_norm / self._sum.count,
            "clipped_sites": float(self._sum.clipped),
        }
        if math.isfinite(self._epsilon):
            metrics["dp_epsilon"] = self._epsilon
        return metrics

    def stop_reason(self, site_metrics: Mapping[str, Mapping[str, float]]) -> str | None:
        target, r = self.args.target_epsilon, self.round_num
        if target is None or r is None:
            return None
        following = round_epsilon(self.args, r + 1, self.sample_rate)
        if following <= target:
            return None
        return (
            f"privacy budget: round {r + 1} would spend epsilon {following:.3g} > target "
            f"{target:g} (delta {self.args.delta:g}), so the job stopped after round {r}, "
            "whose model is the final one"
        )


__all__ = ["DPFedAvg", "DPFedAvgArgs", "PrivacyBudgetError", "round_epsilon"]
