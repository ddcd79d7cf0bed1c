"""Hierarchical FedAvg: sites are averaged within their group, then the groups are averaged.

As in client-edge-cloud hierarchical FL (Liu et al. 2020, "Client-Edge-Cloud Hierarchical
Federated Learning"), each group stands for an intermediate aggregator. Within a group the
sites are weighted by samples. Across groups:

* ``group_weighting="samples"``: each group weighs its total samples. This equals flat FedAvg
  over all sites (sum_g N_g * (sum_i n_i w_i / N_g) / N = sum_i n_i w_i / N): the grouping
  changes where sums are taken, not the result.
* ``group_weighting="equal"``: every group that reported weighs the same, whatever its size —
  one large institution cannot outvote the others.

Groups with no update this round are left out. Memory is one accumulator per group. Integer
buffers are rounded once, at the end (half-to-even), not per group.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from resonfl.fl.base import Aggregator, NoUpdatesError, StateDict, UnknownSiteError
from resonfl.fl.fedavg import WeightedSum, cast_like


class HierarchicalArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: dict[str, list[str]] = Field(min_length=1, description="Group name -> its sites.")
    group_weighting: Literal["samples", "equal"] = Field(
        default="samples",
        description="samples: each group weighs its samples (= flat FedAvg); equal: one vote each.",
    )

    @model_validator(mode="after")
    def _each_site_in_one_group(self) -> HierarchicalArgs:
        seen: dict[str, str] = {}
        for group, sites in self.groups.items():
            if not sites:
                raise ValueError(f"groups.{group}: a group needs at least one site")
            for site in sites:
                if site in seen:
                    raise ValueError(
                        f"groups: site {site!r} is in both {seen[site]!r} and {group!r}"
                    )
                seen[site] = group
        return self

    def check_sites(self, sites: list[str]) -> None:
        """The groups cover exactly the job's sites (ValueError naming the odd ones out)."""
        grouped = [s for members in self.groups.values() for s in members]
        missing = [s for s in sites if s not in grouped]
        extra = [s for s in grouped if s not in sites]
        parts = ([f"not in any group: {', '.join(missing)}"] if missing else []) + (
            [f"not a site of the job: {', '.join(extra)}"] if extra else []
        )
        if parts:
            raise ValueError("; ".join(parts))


class HierarchicalFedAvg(Aggregator):
    """FedAvg within each group, then across groups (by samples or equally)."""

    Args = HierarchicalArgs
    args: HierarchicalArgs

    def __init__(self, args: Any = None) -> None:
        super().__init__(args)
        self._group_of = {s: g for g, sites in self.args.groups.items() for s in sites}
        self._accs: dict[str, WeightedSum] = {}

    def reset(self, global_weights: StateDict, round_num: int) -> None:
        self._begin_round(global_weights, round_num)
        self._accs = {}

    def accept(self, site: str, weights: StateDict, num_samples: int) -> None:
        self._open_global()
        group = self._group_of.get(site)
        if group is None:
            raise UnknownSiteError(
                f"site {site!r} is in no group; groups: {sorted(self.args.groups)}"
            )
        n = self._admit(site, weights, num_samples)
        self._accs.setdefault(group, WeightedSum()).add(weights, n)

    def aggregate(self) -> StateDict:
        global_weights = self._open_global()
        if self._result is None:
            if not self._accs:
                raise NoUpdatesError(f"round {self.round_num}: no update was accepted")
            top = WeightedSum()
            total = 0.0
            for acc in self._accs.values():
                weight = float(acc.total) if self.args.group_weighting == "samples" else 1.0
                top.add_mean(acc.mean(), weight)
                total += weight
            means = top.mean(denominator=total)
            self._result = {k: cast_like(means[k], t.dtype) for k, t in global_weights.items()}
        return dict(self._result)


__all__ = ["HierarchicalArgs", "HierarchicalFedAvg"]
