"""Jobs with their rounds and per-site results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backend.models import JobStatus, ResultStatus, RoundStatus


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


class RoundPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    status: RoundStatus
    deadline: datetime | None
    started_at: datetime | None
    aggregated_at: datetime | None
    timings: dict[str, Any]
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


class JobDetail(JobPublic):
    config: dict[str, Any] = Field(description="meta, client and server configs as submitted")
    files: list[str] = Field(description="names of the rendered files")
    attachments: dict[str, Any]
    rounds: list[RoundPublic]


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
