"""`rounds.reconcile` against a real (SQLite) job store: what it does about deadlines, silent
sites and lost messages. The dispatcher records instead of sending."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from resonfl_server.backend.core.db import create_db_engine, make_session_factory
from resonfl_server.backend.models import (
    Base,
    Job,
    JobStatus,
    ResultStatus,
    Round,
    RoundStatus,
    Site,
    SiteResult,
    SiteStatus,
    User,
    utcnow,
)
from resonfl_server.backend.services import rounds
from resonfl_server.backend.storage import ArtifactStore


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[object, ...]]] = []

    def send_start(self, job_id: int) -> None:
        self.sent.append(("start", (job_id,)))

    def send_train(self, site: str, job_id: int, round_num: int) -> None:
        self.sent.append(("train", (site, job_id, round_num)))

    def send_prepare(self, site: str, job_id: int) -> None:
        self.sent.append(("prepare", (site, job_id)))

    def send_aggregate(self, job_id: int, round_num: int) -> None:
        self.sent.append(("aggregate", (job_id, round_num)))

    def send_fold(self, job_id: int, round_num: int, site: str) -> None:
        self.sent.append(("fold", (job_id, round_num, site)))



@pytest.fixture
def session(tmp_path: Path) -> Session:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(engine)
    return make_session_factory(engine)()


def running_round(session: Session, deadline_in_s: float) -> Job:
    now = utcnow()
    user = User(email="a@b.c", is_admin=True)
    session.add(user)
    session.flush()
    job = Job(
        owner_id=user.id,
        name="j",
        status=JobStatus.RUNNING,
        files={},
        config={},
        sites=["site-1", "site-2"],
        num_rounds=2,
        min_clients=2,
        current_round=0,
        started_at=now,
    )
    session.add(job)
    session.flush()
    session.add(
        Round(
            job_id=job.id,
            number=0,
            status=RoundStatus.RUNNING,
            started_at=now,
            deadline=now + timedelta(seconds=deadline_in_s),
            min_results=2,
        )
    )
    for i, name in enumerate(["site-1", "site-2"]):
        session.add(
            Site(
                name=name,
                token_hash=f"{i}" * 64,
                status=SiteStatus.BUSY,
                last_heartbeat=now,
                gpus=[],
            )
        )
        session.add(SiteResult(job_id=job.id, round_num=0, site=name, status=ResultStatus.TRAINING))
    session.commit()
    return job


def test_a_round_past_its_deadline_fails_unanswered_sites_and_asks_to_aggregate(
    session: Session, tmp_path: Path
) -> None:
    job = running_round(session, deadline_in_s=-1)
    sent = Recorder()
    report = rounds.reconcile(session, ArtifactStore(tmp_path / "data"), sent)
    assert ("aggregate", (job.id, 0)) in sent.sent
    assert sorted(s for _, _, s in report.failed_sites) == ["site-1", "site-2"]
    errors = [r.error for r in session.query(SiteResult).all()]
    assert all(e and "deadline" in e for e in errors)


def test_a_site_silent_past_the_heartbeat_timeout_is_redispatched_once_then_failed(
    session: Session, tmp_path: Path
) -> None:
    job = running_round(session, deadline_in_s=3600)
    store = ArtifactStore(tmp_path / "data")
    later = utcnow() + timedelta(seconds=120)  # both heartbeats are now 120 s old
    session.query(Site).filter_by(name="site-2").update({"last_heartbeat": later})
    session.commit()
    sent = Recorder()
    rounds.reconcile(session, store, sent, heartbeat_timeout_s=60, now=later)
    assert sent.sent == [("train", ("site-1", job.id, 0))]

    much_later = later + timedelta(seconds=120)
    session.query(Site).filter_by(name="site-2").update({"last_heartbeat": much_later})
    session.commit()
    rounds.reconcile(session, store, sent, heartbeat_timeout_s=60, now=much_later)
    site1 = session.query(SiteResult).filter_by(site="site-1").one()
    assert site1.status == ResultStatus.FAILED and "silent" in (site1.error or "")
    # min_clients=2 can no longer be met: aggregate now, which fails the job with the reason
    assert sent.sent[-1] == ("aggregate", (job.id, 0))


def test_an_early_aggregate_message_never_closes_a_round_short(
    session: Session, tmp_path: Path
) -> None:
    job = running_round(session, deadline_in_s=3600)
    assert not rounds.aggregate_round(
        session, ArtifactStore(tmp_path / "data"), job.id, 0, Recorder()
    )
    rnd = session.query(Round).one()
    session.refresh(rnd)
    assert rnd.status == RoundStatus.RUNNING
    assert session.get(Job, job.id).status == JobStatus.RUNNING  # type: ignore[union-attr]
