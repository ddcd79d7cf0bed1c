"""Prometheus `/metrics` (text exposition format, `prometheus-client`).

Every number is read from the job store (and the broker, for queue depth) when Prometheus
scrapes, by one collector: so the API, however many processes it runs, reports the same
totals, nothing is lost on a restart, and nothing in the round path has to count. With
`RESONFL_METRICS_TOKEN` set the endpoint asks for it as a bearer token.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from datetime import UTC

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from resonfl_server.backend.core.config import Settings
from resonfl_server.backend.models import Artifact, Job, JobStatus, Round, RoundStatus, Site
from resonfl_server.backend.services import accounts

log = logging.getLogger("resonfl.metrics")
router = APIRouter(tags=["monitoring"])

ROUND_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
OVERHEAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


class StoreCollector(Collector):
    """Reads the job store (and the broker's queue lengths) at each scrape."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            yield from _jobs(session)
            yield from _rounds(session)
            sites = list(session.scalars(select(Site).order_by(Site.name)))
            yield from _sites(sites, self.settings.site_heartbeat_timeout_s)
            yield from _uploads(session)
        yield from _queues([s.name for s in sites], self.settings.redis_url)


def _jobs(session: Session) -> Iterator[Metric]:
    counts: dict[JobStatus, int] = dict(
        session.execute(select(Job.status, func.count()).group_by(Job.status)).all()  # type: ignore[arg-type]
    )
    jobs = GaugeMetricFamily("resonfl_jobs", "Jobs by state", labels=["state"])
    for state in JobStatus:
        jobs.add_metric([state.value], float(counts.get(state, 0)))
    yield jobs


def _rounds(session: Session) -> Iterator[Metric]:
    done = session.scalar(
        select(func.count()).select_from(Round).where(Round.status == RoundStatus.DONE)
    )
    total = CounterMetricFamily("resonfl_rounds_done", "Rounds aggregated, all jobs")
    total.add_metric([], float(done or 0))
    yield total
    rows = session.execute(
        select(Round.round_s, Round.overhead_s).where(Round.round_s.is_not(None))
    ).all()
    yield _histogram(
        "resonfl_round_seconds", "Round wall time, opening to aggregation",
        [r[0] for r in rows], ROUND_BUCKETS,
    )  # fmt: skip
    yield _histogram(
        "resonfl_round_overhead_seconds", "Round time beyond the slowest site's training",
        [r[1] for r in rows if r[1] is not None], OVERHEAD_BUCKETS,
    )  # fmt: skip


def _histogram(name: str, doc: str, values: list[float], bounds: tuple[float, ...]) -> Metric:
    buckets = [(_le(b), float(sum(1 for v in values if v <= b))) for b in bounds]
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(sum(values)))


def _le(bound: float) -> str:
    return f"{bound:g}" if bound != int(bound) else f"{int(bound)}.0"


def _sites(sites: list[Site], timeout_s: float) -> Iterator[Metric]:
    beat = GaugeMetricFamily(
        "resonfl_site_last_heartbeat_timestamp_seconds",
        "Unix time of each site's last heartbeat",
        labels=["site"],
    )
    up = GaugeMetricFamily(
        "resonfl_site_up", "1 if the site's heartbeat is recent, else 0", labels=["site"]
    )
    for site in sites:
        if site.last_heartbeat is not None:
            stamp = site.last_heartbeat
            stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
            beat.add_metric([site.name], stamp.timestamp())
        up.add_metric([site.name], 1.0 if accounts.is_online(site, timeout_s) else 0.0)
    yield beat
    yield up


def _uploads(session: Session) -> Iterator[Metric]:
    sizes: dict[str, int | None] = dict(
        session.execute(select(Artifact.kind, func.sum(Artifact.size)).group_by(Artifact.kind)).all()
    )
    total = CounterMetricFamily(
        "resonfl_upload_bytes",
        "Bytes stored from uploads: site updates (update), submissions (shard, checkpoint, "
        "requirements), site logs (log); global weights the server made are kind weights",
        labels=["kind"],
    )
    for kind, size in sorted(sizes.items()):
        total.add_metric([str(kind)], float(size or 0))
    yield total


def _queues(sites: list[str], redis_url: str | None) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "resonfl_site_queue_depth", "Tasks waiting in each site's queue", labels=["site"]
    )
    if redis_url:
        try:
            import redis  # lazy: the API talks to the broker only here and in the dispatcher

            client = redis.Redis.from_url(redis_url, socket_timeout=2)
            for site in sites:
                depth.add_metric([site], float(client.llen(f"site.{site}")))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a broker outage must not fail the scrape
            log.warning("queue depth unavailable: %s", exc)
    yield depth


def make_registry(sessions: sessionmaker[Session], settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(sessions, settings))
    return registry


@router.get("/metrics", include_in_schema=False)
def read_metrics(request: Request) -> Response:
    """Prometheus text format; a bearer token when RESONFL_METRICS_TOKEN is set."""
    settings: Settings = request.app.state.settings
    if settings.metrics_token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
            return Response("metrics: a bearer token is required\n", status_code=401)
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
