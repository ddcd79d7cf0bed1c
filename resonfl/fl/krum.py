"""Krum and Multi-Krum: keep the updates closest to their neighbours, drop the outliers.

Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent".
With n updates of which at most f are bad, each update's score is the sum of its squared L2
distances to its n - f - 2 nearest other updates (over every floating-point tensor of the
model). Krum returns the update with the lowest score; Multi-Krum averages the ``keep`` lowest
(``keep`` = n - f by default). The guarantee needs n >= 2f + 3.

Memory: every update at once (`resonfl.fl.buffered`) plus the n x n distance matrix, built one
key at a time. Sample counts are ignored. On non-IID data Krum returns one site's model, which
knows only that site's classes: prefer Multi-Krum there (docs/results.md has both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, Field

from resonfl.fl.base import StateDict
from resonfl.fl.buffered import BufferedAggregator, RobustArgs


class KrumArgs(RobustArgs):
    def min_sites(self) -> int:
        return 2 * self.max_bad_sites + 3

    def rule(self) -> str:
        return "Krum needs n >= 2f + 3"


class MultiKrumArgs(KrumArgs):
    keep: int | None = Field(
        default=None,
        ge=1,
        description="m: how many of the best-scored updates to average; blank = n - f",
    )

    def check_sites(self, sites: list[str]) -> None:
        super().check_sites(sites)
        if self.keep is not None and self.keep > len(sites):
            raise ValueError(f"keep={self.keep} exceeds the number of sites ({len(sites)})")


def pairwise_sq_distances(updates: list[StateDict], keys: list[str]) -> torch.Tensor:
    """n x n squared L2 distances over ``keys``, summed key by key (float64)."""
    n = len(updates)
    dist = torch.zeros(n, n, dtype=torch.float64)
    for key in keys:
        flat = torch.stack([u[key].reshape(-1).to(torch.float64) for u in updates])
        dist += torch.cdist(flat, flat).pow(2)
    return dist


def krum_scores(dist: torch.Tensor, max_bad: int) -> torch.Tensor:
    """Each row's sum of its n - f - 2 smallest distances to the others."""
    n = dist.shape[0]
    neighbours = max(n - max_bad - 2, 1)
    others = dist + torch.diag(torch.full((n,), float("inf"), dtype=dist.dtype))
    return others.sort(dim=1).values[:, :neighbours].sum(dim=1)


class Krum(BufferedAggregator):
    """Krum: the one update closest to its n - f - 2 nearest neighbours becomes the global."""

    Args: ClassVar[type[BaseModel]] = KrumArgs
    args: Any

    def __init__(self, args: Any = None) -> None:
        super().__init__(args)
        self.selected: list[str] = []

    def keep_count(self, n: int) -> int:
        return 1

    def _combine(
        self, global_weights: StateDict, updates: list[tuple[str, StateDict]]
    ) -> StateDict:
        keys = [k for k, t in global_weights.items() if t.is_floating_point()]
        dist = pairwise_sq_distances([w for _, w in updates], keys)
        scores = krum_scores(dist, self.args.max_bad_sites)
        m = min(self.keep_count(len(updates)), len(updates))
        best = scores.argsort()[:m].tolist()
        self.selected = [updates[i][0] for i in best]
        chosen = [updates[i] for i in best]
        return self.finish(
            global_weights, {k: self.stack(chosen, k).mean(dim=0) for k in global_weights}
        )

    def round_metrics(self, site_metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        return {"krum_kept_sites": float(len(self.selected))}


class MultiKrum(Krum):
    """Multi-Krum: average the m best-scored updates (m = n - f unless set)."""

    Args = MultiKrumArgs

    def keep_count(self, n: int) -> int:
        keep = self.args.keep
        return keep if keep is not None else n - self.args.max_bad_sites


__all__ = ["Krum", "KrumArgs", "MultiKrum", "MultiKrumArgs", "krum_scores", "pairwise_sq_distances"]
