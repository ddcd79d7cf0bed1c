"""The site task (queue `site.<name>`): thin, the work is in resonfl_server.workers.site.rounds.

Acked on receipt, not late: a killed worker's message would otherwise come back only after
the broker's visibility timeout (hours). The job store notices the silent site instead and
sends the task again (resonfl_server.backend.services.rounds.reconcile); running a round twice is harmless
because the upload of a round that is already recorded or closed is refused.
"""

from __future__ import annotations

import logging

from celery import shared_task

from resonfl_server.workers.celery_app import SITE_PREPARE, SITE_TRAIN
from resonfl_server.workers.site.config import site_config
from resonfl_server.workers.site.rounds import prepare_job, train_round

log = logging.getLogger("resonfl.site")


@shared_task(name=SITE_TRAIN, acks_late=False, ignore_result=True)
def train(job_id: int, round_num: int) -> str:
    outcome = train_round(site_config(), job_id, round_num)
    log.info("job %s round %s: %s", job_id, round_num, outcome)
    return outcome


@shared_task(name=SITE_PREPARE, acks_late=False, ignore_result=True)
def prepare(job_id: int) -> str:
    outcome = prepare_job(site_config(), job_id)
    log.info("job %s prepared: %s", job_id, outcome)
    return outcome
