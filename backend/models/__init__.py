"""The job store's tables. Import from here so every model is registered on `Base.metadata`."""

from resonfl_server.backend.models.base import INT_MAX, Base, utcnow
from resonfl_server.backend.models.job import (
    Artifact,
    Job,
    JobStatus,
    ResultStatus,
    Round,
    RoundMetric,
    RoundStatus,
    SiteResult,
)
from resonfl_server.backend.models.site import Site, SiteStatus
from resonfl_server.backend.models.user import ApiToken, User

__all__ = [
    "INT_MAX",
    "ApiToken",
    "Artifact",
    "Base",
    "Job",
    "JobStatus",
    "ResultStatus",
    "Round",
    "RoundMetric",
    "RoundStatus",
    "Site",
    "SiteResult",
    "SiteStatus",
    "User",
    "utcnow",
]
