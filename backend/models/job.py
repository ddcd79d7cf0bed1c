"""Jobs, their rounds, each site's result per round, and stored artifacts."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from resonfl_server.backend.models.base import Base, str_enum, utcnow


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED)


class RoundStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    AGGREGATING = "aggregating"
    DONE = "done"
    FAILED = "failed"


class ResultStatus(enum.StrEnum):
    QUEUED = "queued"
    TRAINING = "training"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"


class Job(Base):
    """A submitted job. `files` holds the six rendered files as text; `attachments` the
    artifact keys of what came with them: {"shards": {site: key}, "checkpoint": key,
    "requirements": key}. The job folder itself lives in the workspace data_dir/jobs/<id>/."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[JobStatus] = mapped_column(
        str_enum(JobStatus), default=JobStatus.QUEUED, index=True
    )
    files: Mapped[dict[str, str]] = mapped_column(JSON)
    attachments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    sites: Mapped[list[str]] = mapped_column(JSON)
    num_rounds: Mapped[int]
    min_clients: Mapped[int]
    current_round: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # the FL job whose recipe this job runs centrally on the pooled shards (services/twins.py)
    twin_of_id: Mapped[int | None] = mapped_column(index=True, default=None)
    init_phases: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # schemas.InitPhases

    rounds: Mapped[list[Round]] = relationship(
        back_populates="job", order_by="Round.number", cascade="all, delete-orphan"
    )
    results: Mapped[list[SiteResult]] = relationship(
        back_populates="job",
        order_by="(SiteResult.round_num, SiteResult.site)",
        cascade="all, delete-orphan",
    )
    decisions: Mapped[list[SiteDecision]] = relationship(
        back_populates="job", order_by="SiteDecision.site", cascade="all, delete-orphan"
    )
    secagg_rounds: Mapped[list[SecAggRound]] = relationship(
        order_by="SecAggRound.round_num", cascade="all, delete-orphan", viewonly=False
    )


class Round(Base):
    """One round of a job. `weights_key`/`weights_sha256` are the global weights *entering*
    this round (safetensors artifact) that sites fetch.

    The round's times are typed columns (seconds, set when it is aggregated): `round_s` wall
    time from opening to aggregation, `train_s_max` the slowest site's training, `overhead_s`
    the rest, split into `site_overhead_s` (inside a site task but outside training) and
    `transport_s` (between the sites' tasks), and `aggregate_s` the aggregation itself. Its
    samples-weighted metrics are rows of `RoundMetric`; each site's own are on `SiteResult`.
    """

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int]
    status: Mapped[RoundStatus] = mapped_column(str_enum(RoundStatus), default=RoundStatus.PENDING)
    weights_key: Mapped[str | None] = mapped_column(String(64))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    deadline: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    aggregated_at: Mapped[datetime | None]
    min_results: Mapped[int | None]  # results the workflow needs to aggregate this round
    # site -> how many times its task was sent again after it went silent
    redispatched: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    round_s: Mapped[float | None]
    train_s_max: Mapped[float | None]
    overhead_s: Mapped[float | None]
    site_overhead_s: Mapped[float | None]
    transport_s: Mapped[float | None]
    aggregate_s: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="rounds")
    metric_rows: Mapped[list[RoundMetric]] = relationship(
        back_populates="round",
        order_by="RoundMetric.name",
        cascade="all, delete-orphan",
        lazy="selectin",
    )

    @property
    def metrics(self) -> dict[str, float]:
        """The round's samples-weighted metrics by name."""
        return {m.name: m.value for m in self.metric_rows}

    @metrics.setter
    def metrics(self, values: dict[str, float]) -> None:
        self.metric_rows = [RoundMetric(name=k, value=float(v)) for k, v in values.items()]


class RoundMetric(Base):
    """One samples-weighted metric of one aggregated round (e.g. ``global_top1``)."""

    __tablename__ = "round_metrics"
    __table_args__ = (UniqueConstraint("round_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float]

    round: Mapped[Round] = relationship(back_populates="metric_rows")


class SiteResult(Base):
    """What one site did in one round: progress, then its update (an artifact) or an error."""

    __tablename__ = "site_results"
    __table_args__ = (UniqueConstraint("job_id", "round_num", "site"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    round_num: Mapped[int]
    site: Mapped[str] = mapped_column(String(63))
    status: Mapped[ResultStatus] = mapped_column(
        str_enum(ResultStatus), default=ResultStatus.QUEUED
    )
    samples: Mapped[int | None]
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifact_key: Mapped[str | None] = mapped_column(String(64))
    sha256: Mapped[str | None] = mapped_column(String(64))
    train_s: Mapped[float | None]
    total_s: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)
    log_key: Mapped[str | None] = mapped_column(String(64))
    # as the site reported them (schemas.phases.RoundPhases / SandboxApplied, validated)
    phases: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sandbox: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    job: Mapped[Job] = relationship(back_populates="results")


class Artifact(Base):
    """A file in the artifact store (shard zips, uploaded updates, global weights, logs)."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DecisionStatus(enum.StrEnum):
    PENDING = "pending"  # the site's operator has not decided yet
    APPROVED = "approved"
    REJECTED = "rejected"


class SiteDecision(Base):
    """A site's approval of a job (its policy asks for one): who decided, when and why.

    Created pending when the job is submitted to a site whose reported policy requires
    approval (services/approvals.py); the job starts once no decision is pending; a rejection
    fails it with the site's reason. Rows are never deleted: the log of every decision."""

    __tablename__ = "site_decisions"
    __table_args__ = (UniqueConstraint("job_id", "site"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(63))
    status: Mapped[DecisionStatus] = mapped_column(
        str_enum(DecisionStatus), default=DecisionStatus.PENDING
    )
    operator: Mapped[str | None] = mapped_column(String(200))  # who, at the site
    reason: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]

    job: Mapped[Job] = relationship(back_populates="decisions")


class SecAggStage(enum.StrEnum):
    """Where a secure-aggregation round is (services/secagg.py): each stage closes when every
    site still in it has spoken or failed, or at its deadline."""

    KEYS = "keys"  # sites post their two public keys
    SHARES = "shares"  # sites post their encrypted shares for their neighbours
    MASKED = "masked"  # sites upload masked vectors (the round's results)
    UNMASK = "unmask"  # survivors post the shares that remove the masks
    READY = "ready"  # the aggregator may unmask the sum


class SecAggRound(Base):
    """The stage state of one round of a secure-aggregation job. The sets are frozen as each
    stage closes, so every party sees the same ones: `sites` (whose keys were taken),
    `sharers` (who shared), `survivors` (masked vector in) and `dropped` (shared, no vector)."""

    __tablename__ = "secagg_rounds"
    __table_args__ = (UniqueConstraint("job_id", "round_num"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    round_num: Mapped[int]
    stage: Mapped[SecAggStage] = mapped_column(str_enum(SecAggStage), default=SecAggStage.KEYS)
    size: Mapped[int] = mapped_column(BigInteger)  # length of each masked vector
    stage_timeout_s: Mapped[float]
    stage_deadline: Mapped[datetime | None]
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    sharers: Mapped[list[str]] = mapped_column(JSON, default=list)
    survivors: Mapped[list[str]] = mapped_column(JSON, default=list)
    dropped: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SecAggMessage(Base):
    """One site's message of one stage: its public keys, its encrypted shares (recipient ->
    ciphertext) or its unmask answers (peer -> share). JSON, base64 / decimal strings."""

    __tablename__ = "secagg_messages"
    __table_args__ = (UniqueConstraint("job_id", "round_num", "kind", "sender"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    round_num: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))  # keys | shares | unmask
    sender: Mapped[str] = mapped_column(String(63))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
