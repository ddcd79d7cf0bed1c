"""Workflows: which sites train in a round and how many results close it."""

from __future__ import annotations

from resonfl.config import min_clients_for
from resonfl.fl.base import Workflow, WorkflowArgs
from resonfl.fl.cyclic import Cyclic


class ScatterAndGather(Workflow):
    """Every site trains every round; a round needs ``min_clients`` results (`min_clients_for`).

    ``min_clients`` larger than the number of sites raises ValueError rather than waiting for
    results that can never come.
    """

    Args = WorkflowArgs
    args: WorkflowArgs

    def sites_for_round(self, round_num: int, sites: list[str]) -> list[str]:
        self._check_round(round_num, sites)
        return list(sites)

    def min_results(self, round_num: int, sites: list[str]) -> int:
        self._check_round(round_num, sites)
        wanted = min_clients_for(self.args.min_clients, len(sites))
        if wanted > len(sites):
            raise ValueError(f"min_clients={wanted} but the job has only {len(sites)} sites")
        return wanted


__all__ = ["Cyclic", "ScatterAndGather"]
