"""The contract between the site API and the round state machine (services.rounds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend.models import ResultStatus


@dataclass(frozen=True)
class SiteReport:
    """One site's outcome for one round, as handed to `rounds.record_result`.

    The SiteResult row (job, round, site) is already updated with these values in the same
    session (flushed, not committed) when `record_result` is called; `record_result` decides
    what follows (aggregate when enough results are in, fail the job when too few sites can
    still answer), commits, and dispatches.
    """

    status: ResultStatus  # DONE or FAILED
    samples: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    artifact_key: str | None = None  # the uploaded weights (safetensors) in the artifact store
    sha256: str | None = None
    train_s: float | None = None
    total_s: float | None = None
    log_key: str | None = None
    error: str | None = None
