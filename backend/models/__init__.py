"""The job store's tables. Import from here so every model is registered on `Base.metadata`."""

from resonfl_server.backend.models.base import INT_MAX, Base, utcnow
from resonfl_server.backend.models.job import (
    Artifact,
    DecisionStatus,
    Job,
    JobStatus,
    ResultStatus,
    Round,
    RoundMetric,
    RoundStatus,
    SecAggMessage,
    SecAggRound,
    SecAggStage,
    SiteDecision,
    SiteResult,
)
from resonfl_server.backend.models.site import Site, SiteStatus
from resonfl_server.backend.models.user import ApiToken, User

__all__ = [
    "INT_MAX",
    "ApiToken",
    "Artifact",
    "Base",
    "DecisionStatus",
    "Job",
    "JobStatus",
    "ResultStatus",
    "Round",
    "RoundMetric",
    "RoundStatus",
    "SecAggMessage",
    "SecAggRound",
    "SecAggStage",
    "Site",
    "SiteDecision",
    "SiteResult",
    "SiteStatus",
    "User",
    "utcnow",
]
