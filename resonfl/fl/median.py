"""Coordinate-wise median and trimmed mean: each coordinate is an order statistic over sites.

Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates".
For every coordinate of every tensor, the sites' values are sorted; the median takes the middle
one (the mean of the two middle ones for an even count), the trimmed mean drops the
``max_bad_sites`` lowest and highest and averages the rest. A bad site moves a coordinate only
within the range of the honest values, however large (scaled) or flipped its update is.

Both need every update at once (see `resonfl.fl.buffered`: memory = sites x model). Both
ignore sample counts. On non-IID data the median also discards honest but unusual sites, so
its clean-run accuracy can trail FedAvg's: docs/results.md measures by how much.
"""

from __future__ import annotations

import torch

from resonfl.fl.base import StateDict
from resonfl.fl.buffered import BufferedAggregator, RobustArgs


def coordinate_median(stacked: torch.Tensor) -> torch.Tensor:
    """Median over dim 0; the mean of the two middle values when the count is even."""
    ordered = stacked.sort(dim=0).values
    n = ordered.shape[0]
    if n % 2:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def trimmed_mean(stacked: torch.Tensor, trim: int) -> torch.Tensor:
    """Mean over dim 0 after dropping the ``trim`` lowest and highest values per coordinate."""
    n = stacked.shape[0]
    if not 0 <= 2 * trim < n:
        raise ValueError(f"cannot trim {trim} from each end of {n} values")
    return stacked.sort(dim=0).values[trim : n - trim].mean(dim=0)


class CoordinateMedianArgs(RobustArgs):
    pass


class TrimmedMeanArgs(RobustArgs):
    pass


class CoordinateMedian(BufferedAggregator):
    """Coordinate-wise median of the sites' weights (robust to f < n/2 bad sites)."""

    Args = CoordinateMedianArgs

    def _combine(
        self, global_weights: StateDict, updates: list[tuple[str, StateDict]]
    ) -> StateDict:
        return self.finish(
            global_weights, {k: coordinate_median(self.stack(updates, k)) for k in global_weights}
        )


class TrimmedMean(BufferedAggregator):
    """Coordinate-wise trimmed mean: drop the f lowest and f highest values, average the rest."""

    Args = TrimmedMeanArgs

    def _combine(
        self, global_weights: StateDict, updates: list[tuple[str, StateDict]]
    ) -> StateDict:
        f = self.args.max_bad_sites
        return self.finish(
            global_weights, {k: trimmed_mean(self.stack(updates, k), f) for k in global_weights}
        )


__all__ = [
    "CoordinateMedian",
    "CoordinateMedianArgs",
    "TrimmedMean",
    "TrimmedMeanArgs",
    "coordinate_median",
    "trimmed_mean",
]
