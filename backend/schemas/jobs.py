"""Jobs with their rounds and per-site results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from resonfl_server.backend.models import JobStatus, ResultStatus, Round, RoundStatus
from resonfl_server.backend.schemas.sites import SiteDecisionPublic, SiteEnvironmentPublic
from resonfl_server.backend.schemas.phases import InitPhases, RoundPhases, SandboxApplied


class SiteResultPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    site: str
    round_num: int
    status: ResultStatus
    samples: int | None
    metrics: dict[str, Any]
    sha256: str | None
    train_s: float | None
    total_s: float | None
    error: str | None
    updated_at: datetime
    phases: RoundPhases | None = Field(None, description="where the site's round time went")
    sandbox: SandboxApplied | None = Field(None, description="the sandbox the site applied")


class RoundTimes(BaseModel):
    """A round's times in seconds (None until it is aggregated) and its counters."""

    model_config = ConfigDict(from_attributes=True)

    round_s: float | None = Field(None, description="wall time from opening to aggregation")
    train_s_max: float | None = Field(None, description="the slowest site's training time")
    overhead_s: float | None = Field(None, description="round_s - train_s_max")
    site_overhead_s: float | None = Field(
        None, description="of the overhead: inside a site task, outside training"
    )
    transport_s: float | None = Field(
        None, description="of the overhead: between the sites' tasks (queues, HTTP)"
    )
    aggregate_s: float | None = Field(None, description="the aggregation itself")
    min_results: int | None = Field(None, description="results the round needs to aggregate")
    redispatched: dict[str, int] = Field(
        default_factory=dict, description="site -> times its task was sent again"
    )

    @classmethod
    def of(cls, rnd: Round) -> RoundTimes:
        return cls.model_validate(rnd)


class RoundPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    status: RoundStatus
    deadline: datetime | None
    started_at: datetime | None
    aggregated_at: datetime | None
    timings: RoundTimes = Field(default_factory=RoundTimes)
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="samples-weighted metrics of the accepted updates, and what the aggregator "
        "reports (e.g. dp_epsilon, clipped_sites)",
    )
    error: str | None
    weights_sha256: str | None
    results: list[SiteResultPublic] = Field(default_factory=list)


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    owner_id: int
    status: JobStatus
    sites: list[str]
    num_rounds: int
    min_clients: int
    current_round: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    twin_of_id: int | None = Field(None, description="this job is the centralized twin of that job")
    init_phases: InitPhases | None = Field(
        None, description="the aggregator's initial-weights step, phase by phase"
    )


class JobDetail(JobPublic):
    config: dict[str, Any] = Field(description="meta, client and server configs as submitted")
    files: list[str] = Field(description="names of the rendered files")
    attachments: dict[str, Any]
    rounds: list[RoundPublic]
    environments: list[SiteEnvironmentPublic] = Field(
        default_factory=list, description="per site: what its requirements install added, time"
    )
    decisions: list[SiteDecisionPublic] = Field(
        default_factory=list,
        description="sites whose policy asks for approval: pending, or who decided, when, why",
    )


class TwinCurvePublic(BaseModel):
    """One metric of the global model entering each round, FL vs its centralized twin."""

    key: str
    label: str
    higher_is_better: bool
    fl: list[tuple[int, float]] = Field(description="(round, value) of the FL job")
    central: list[tuple[int, float]] = Field(description="(round, value) of the twin")
    gap: float | None = Field(None, description="central - FL at gap_round (metric units)")
    gap_round: int | None = None
    closed: list[tuple[int, float]] = Field(
        default_factory=list,
        description="(round, share): (FL[r] - start) / (central final - start), start = round 0",
    )


class TwinPublic(BaseModel):
    job_id: int
    twin_id: int
    twin_status: str
    site: str = Field(description="the site worker that trains the twin on the pooled shards")
    steps_per_round: int | None = Field(None, description="the twin's optimizer steps per round")
    curves: list[TwinCurvePublic]


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class SiteLog(BaseModel):
    round: int
    status: ResultStatus
    error: str | None
    log: str


class JobLogs(BaseModel):
    job_id: int
    sites: dict[str, list[SiteLog]]
