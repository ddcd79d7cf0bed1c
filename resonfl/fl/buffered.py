"""The base of aggregators whose math needs every update at once (median, trimmed mean, Krum).

A streaming aggregator (FedAvg, norm clipping, DP-FedAvg) folds each update into a running
sum and drops it. An order statistic cannot: the median of a coordinate depends on every
site's value, and Krum scores each update by its distances to all the others. So these keep
each accepted update as it was sent (its own dtype, on the CPU) until ``aggregate()``:

    memory = accepted sites x model size  (e.g. 16 sites x 94 MB ResNet-50 = 1.5 GB)

plus, while combining one state-dict key, one ``(sites, *shape)`` float64 stack of that key
(keys are combined one at a time, so the peak extra is the largest tensor times the sites).
Integer and bool buffers (BatchNorm's ``num_batches_tracked``) go through the same rule and
are rounded half-to-even back to their dtype, as in FedAvg.

Robust rules ignore the sites' sample counts on purpose: a bad site can claim any count, and a
count-weighted median or Krum would hand it the weight it claims.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from resonfl.fl.base import Aggregator, FLError, NoUpdatesError, StateDict
from resonfl.fl.fedavg import cast_like

BAD_SITES_HELP = (
    "f: how many sites may send arbitrary (wrong, scaled, sign-flipped) updates in a round "
    "and still be outvoted"
)


class TooFewSitesError(FLError, RuntimeError):
    """A round has fewer accepted updates than the rule needs to tolerate its bad sites."""


class RobustArgs(BaseModel):
    """Settings every robust rule has: the number of bad sites it is built to tolerate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bad_sites: int = Field(default=1, ge=0, le=1000, description=BAD_SITES_HELP)

    def min_sites(self) -> int:
        """The fewest updates a round needs for the guarantee (per rule)."""
        return 2 * self.max_bad_sites + 1

    def check_sites(self, sites: list[str]) -> None:
        """ValueError when the job's sites are too few for `max_bad_sites`."""
        need = self.min_sites()
        if len(sites) < need:
            raise ValueError(
                f"max_bad_sites={self.max_bad_sites} needs at least {need} sites "
                f"({self.rule()}), the job has {len(sites)}: lower max_bad_sites or add sites"
            )

    def rule(self) -> str:
        return "n >= 2f + 1"


class BufferedAggregator(Aggregator):
    """Keeps every accepted update until ``aggregate()``; subclasses combine them."""

    Args: ClassVar[type[BaseModel]] = RobustArgs
    args: Any

    def __init__(self, args: Any = None) -> None:
        super().__init__(args)
        self._updates: list[tuple[str, StateDict]] = []

    def reset(self, global_weights: StateDict, round_num: int) -> None:
        self._begin_round(global_weights, round_num)
        self._updates = []

    def accept(self, site: str, weights: StateDict, num_samples: int) -> None:
        self._admit(site, weights, num_samples)
        self._updates.append((site, {k: v.detach().to("cpu") for k, v in weights.items()}))

    def aggregate(self) -> StateDict:
        global_weights = self._open_global()
        if self._result is None:
            if not self._updates:
                raise NoUpdatesError(f"round {self.round_num}: no update was accepted")
            need = self.args.min_sites()
            if len(self._updates) < need:
                raise TooFewSitesError(
                    f"round {self.round_num}: {type(self).__name__} with max_bad_sites="
                    f"{self.args.max_bad_sites} needs {need} updates ({self.args.rule()}), "
                    f"got {len(self._updates)}; nothing was aggregated"
                )
            self._result = self._combine(global_weights, self._updates)
            self._updates = []  # the round is closed: free n models now, not at the next reset
        return dict(self._result)

    @abstractmethod
    def _combine(
        self, global_weights: StateDict, updates: list[tuple[str, StateDict]]
    ) -> StateDict:
        """The new global weights from every accepted update (at least ``min_sites()``)."""

    @staticmethod
    def stack(updates: list[tuple[str, StateDict]], key: str) -> torch.Tensor:
        """``(sites, *shape)`` float64 stack of one key over the updates."""
        return torch.stack([w[key].to(torch.float64) for _, w in updates])

    @staticmethod
    def finish(global_weights: StateDict, combined: dict[str, torch.Tensor]) -> StateDict:
        return {k: cast_like(combined[k], t.dtype) for k, t in global_weights.items()}


__all__ = ["BAD_SITES_HELP", "BufferedAggregator", "RobustArgs", "TooFewSitesError"]
