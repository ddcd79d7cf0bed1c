"""What a site reports for a round, as the site API records it before handing over to
services.rounds (which then needs only the ids)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resonfl_server.backend.models import ResultStatus


@dataclass(frozen=True)
class SiteReport:
    """One site's outcome for one round, as the site API writes it to its SiteResult row.

    The row (job, round, site) is updated with these values in the session (flushed, not
    committed) before `rounds.record_result(session, job_id, round_num)` is called; that
    decides what follows (aggregate when enough results are in, fail the job when too few
    sites can still answer), commits, and dispatches.
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
    phases: dict[str, Any] | None = None  # schemas.phases.RoundPhases, validated
    sandbox: dict[str, Any] | None = None  # schemas.phases.SandboxApplied, validated
