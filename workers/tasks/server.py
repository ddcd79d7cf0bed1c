"""Aggregator tasks (queue `server`): thin wrappers over resonfl_server.backend.services.rounds.

Each is idempotent (the job store's conditional updates decide), so each acks late: an
aggregator killed mid-task gets the message back and the second run does the right thing.
"""

from __future__ import annotations

import logging

from celery import shared_task

from resonfl_server.backend.services import rounds
from resonfl_server.workers.celery_app import (
    SERVER_AGGREGATE,
    SERVER_FOLD,
    SERVER_RECONCILE,
    SERVER_START,
)
from resonfl_server.backend.services import tracking
from resonfl_server.workers.runtime import server_runtime

log = logging.getLogger("resonfl.aggregator")
IDEMPOTENT = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(name=SERVER_START, **IDEMPOTENT)
def start(job_id: int) -> bool:
    rt = server_runtime()
    with rt.session() as session:
        return rounds.init_job(session, rt.store, job_id, rt.dispatcher, warm=rt.warm_init)


@shared_task(name=SERVER_AGGREGATE, **IDEMPOTENT)
def aggregate(job_id: int, round_num: int) -> bool:
    rt = server_runtime()
    with rt.session() as session:
        done = rounds.aggregate_round(session, rt.store, job_id, round_num, rt.dispatcher)
        if done:  # the next round is on its way already: tracking adds nothing to it
            tracking.record_round(rt.settings, session, rt.store, job_id, round_num)
    if done:
        log.info("aggregated job %s round %s", job_id, round_num)
    return done


@shared_task(name=SERVER_FOLD, **IDEMPOTENT)
def fold(job_id: int, round_num: int, site: str) -> bool:
    rt = server_runtime()
    with rt.session() as session:
        return rounds.fold_arrived(session, rt.store, job_id, round_num, site)


@shared_task(name=SERVER_RECONCILE, **IDEMPOTENT)
def reconcile() -> str:
    rt = server_runtime()
    with rt.session() as session:
        report = rounds.reconcile(
            session,
            rt.store,
            rt.dispatcher,
            heartbeat_timeout_s=rt.settings.site_heartbeat_timeout_s,
        )
    return repr(report)
