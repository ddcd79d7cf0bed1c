"""How the API asks the round machinery to act. The Celery implementation lives in workers/;
tests use any object with these methods. Every call passes ids only, never tensors."""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from resonfl_server.backend.core.config import Settings

DEFAULT_DISPATCHER = "resonfl_server.workers.dispatch:CeleryDispatcher"


@runtime_checkable
class Dispatcher(Protocol):
    def send_start(self, job_id: int) -> None:
        """Prepare the job on the server side (initial weights) and scatter round 0."""

    def send_train(self, site: str, job_id: int, round_num: int) -> None:
        """Enqueue one site's training for a round on that site's queue."""

    def send_prepare(self, site: str, job_id: int) -> None:
        """Ask a site to get a starting job ready (bundle, data, job process) while the
        server builds the initial weights; a hint: round 0's task does all of it anyway."""

    def send_aggregate(self, job_id: int, round_num: int) -> None:
        """Enqueue the (exactly-once, idempotent) aggregation of a round."""

    def send_fold(self, job_id: int, round_num: int, site: str) -> None:
        """Enqueue folding one site's update into its running round (idempotent; losing the
        message only means the aggregation folds that update itself)."""


def load_dispatcher(settings: Settings, path: str = DEFAULT_DISPATCHER) -> Dispatcher:
    """Build the production dispatcher: `path` names a class taking the Settings."""
    module_name, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    dispatcher = cls(settings)
    if not isinstance(dispatcher, Dispatcher):
        raise TypeError(
            f"{path} does not implement resonfl_server.backend.services.dispatch.Dispatcher"
        )
    return dispatcher
