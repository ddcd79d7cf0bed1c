"""The Celery implementation of `resonfl_server.backend.services.dispatch.Dispatcher`: ids in, messages out."""

from __future__ import annotations

from celery import Celery

from resonfl_server.workers.celery_app import (
    SERVER_AGGREGATE,
    SERVER_FOLD,
    SERVER_QUEUE,
    SERVER_START,
    SITE_PREPARE,
    SITE_TRAIN,
    HasBroker,
    make_celery,
    site_queue,
)


class CeleryDispatcher:
    """Sends task messages by name, so the API process never imports the task code."""

    def __init__(self, settings: HasBroker | Celery | str) -> None:
        self.app = settings if isinstance(settings, Celery) else make_celery(settings)

    def send_start(self, job_id: int) -> None:
        self.app.send_task(SERVER_START, args=[job_id], queue=SERVER_QUEUE)

    def send_train(self, site: str, job_id: int, round_num: int) -> None:
        self.app.send_task(SITE_TRAIN, args=[job_id, round_num], queue=site_queue(site))

    def send_prepare(self, site: str, job_id: int) -> None:
        self.app.send_task(SITE_PREPARE, args=[job_id], queue=site_queue(site))

    def send_aggregate(self, job_id: int, round_num: int) -> None:
        self.app.send_task(SERVER_AGGREGATE, args=[job_id, round_num], queue=SERVER_QUEUE)

    def send_fold(self, job_id: int, round_num: int, site: str) -> None:
        self.app.send_task(SERVER_FOLD, args=[job_id, round_num, site], queue=SERVER_QUEUE)
