"""A site: a GPU worker's identity, its token and what it last reported."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from resonfl_server.backend.models.base import Base, str_enum, utcnow


class SiteStatus(enum.StrEnum):
    REGISTERED = "registered"  # never heard from
    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"  # said goodbye


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[SiteStatus] = mapped_column(str_enum(SiteStatus), default=SiteStatus.REGISTERED)
    last_heartbeat: Mapped[datetime | None]
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # as the worker last reported them (schemas.sites.SiteDatasetPublic / SitePolicyPublic)
    datasets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
