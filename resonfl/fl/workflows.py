"""Workflows: which sites train in a round and how many results close it."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from resonfl.config import min_clients_for
from resonfl.fl.base import Workflow, WorkflowArgs
from resonfl.fl.cyclic import Cyclic


class ScatterAndGatherArgs(WorkflowArgs):
    sites_per_round: int | None = Field(
        default=None,
        ge=1,
        description="sites asked each round, drawn uniformly at random by the server (a "
        "secure random source, a new draw every round); blank = every site. Below the number "
        "of sites, DP-FedAvg's accountant counts the sampling rate sites_per_round / sites",
    )

    def check_sites(self, sites: list[str]) -> None:
        if self.sites_per_round is not None and self.sites_per_round > len(sites):
            raise ValueError(
                f"sites_per_round={self.sites_per_round} but the job has only {len(sites)} sites"
            )


class ScatterAndGather(Workflow):
    """Every site, or ``sites_per_round`` of them drawn at random, trains each round.

    A round needs ``min_clients`` results (`min_clients_for`), at most the number asked.

    ``min_clients`` or ``sites_per_round`` larger than the number of sites raises ValueError
    rather than waiting for results that can never come. A round's draw is kept, so asking
    again for the same round (the platform does, to prepare round 0) gives the same sites.
    """

    Args = ScatterAndGatherArgs
    args: ScatterAndGatherArgs

    def __init__(self, args: BaseModel | Mapping[str, Any] | None = None) -> None:
        super().__init__(args)
        self._drawn: dict[tuple[int, tuple[str, ...]], list[str]] = {}

    def sites_for_round(self, round_num: int, sites: list[str]) -> list[str]:
        self._check_round(round_num, sites)
        k = self._per_round(sites)
        if k == len(sites):
            return list(sites)
        key = (round_num, tuple(sites))
        if key not in self._drawn:  # the sites must not predict it: the OS's random source
            chosen = set(random.SystemRandom().sample(sites, k))
            self._drawn[key] = [s for s in sites if s in chosen]
        return list(self._drawn[key])

    def min_results(self, round_num: int, sites: list[str]) -> int:
        self._check_round(round_num, sites)
        wanted = min_clients_for(self.args.min_clients, len(sites))
        if wanted > len(sites):
            raise ValueError(f"min_clients={wanted} but the job has only {len(sites)} sites")
        return min(wanted, self._per_round(sites))

    def sample_rate(self, sites: list[str]) -> float:
        return self._per_round(sites) / len(sites) if sites else 1.0

    def _per_round(self, sites: list[str]) -> int:
        k = self.args.sites_per_round
        if k is None:
            return len(sites)
        if k > len(sites):
            raise ValueError(f"sites_per_round={k} but the job has only {len(sites)} sites")
        return k


__all__ = ["Cyclic", "ScatterAndGather", "ScatterAndGatherArgs"]
