"""Cyclic (sequential) training: the model visits the sites in turn, one per round.

Chang et al. 2018, "Distributed deep learning networks among institutions for medical imaging"
(cyclical weight transfer). Round r is trained by ``sites[r % len(sites)]`` alone and that
site's weights become the new global model. Pass ``sites`` in a stable order (e.g. the job's
deploy map order); ``min_clients`` is accepted for config uniformity and ignored (always 1).
"""

from __future__ import annotations

from typing import Any

from resonfl.fl.base import (
    Aggregator,
    InvalidUpdateError,
    NoUpdatesError,
    StateDict,
    Workflow,
    WorkflowArgs,
)


class Cyclic(Workflow):
    """One site per round, in turn."""

    Args = WorkflowArgs
    args: WorkflowArgs

    def sites_for_round(self, round_num: int, sites: list[str]) -> list[str]:
        self._check_round(round_num, sites)
        return [sites[round_num % len(sites)]]

    def min_results(self, round_num: int, sites: list[str]) -> int:
        self._check_round(round_num, sites)
        return 1


class CyclicAggregator(Aggregator):
    """The round's single update becomes the new global model (cast to the global's dtypes)."""

    def __init__(self, args: Any = None) -> None:
        super().__init__(args)
        self._update: StateDict | None = None

    def reset(self, global_weights: StateDict, round_num: int) -> None:
        self._begin_round(global_weights, round_num)
        self._update = None

    def accept(self, site: str, weights: StateDict, num_samples: int) -> None:
        if self._update is not None and site not in self.accepted_sites:
            raise InvalidUpdateError(
                f"cyclic round {self.round_num} already has its one update; {site!r} refused"
            )
        self._admit(site, weights, num_samples)
        global_weights = self._open_global()
        self._update = {
            k: weights[k].detach().to(device="cpu", dtype=t.dtype).clone()
            for k, t in global_weights.items()
        }

    def aggregate(self) -> StateDict:
        self._open_global()
        if self._update is None:
            raise NoUpdatesError(f"round {self.round_num}: no update was accepted")
        self._result = self._update
        return dict(self._update)


__all__ = ["Cyclic", "CyclicAggregator"]
