"""The Celery app: Redis is only the transport; the job store decides what runs.

One queue per site (`site.<name>`), consumed only by that site's worker, and one `server`
queue for the aggregator. Messages carry ids (job, round) and nothing else: weights travel
over HTTP by reference and are checked against the sha256 the job store recorded.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from celery import Celery

SERVER_QUEUE = "server"
SITE_TRAIN = "resonfl.site.train"
SITE_PREPARE = "resonfl.site.prepare"
SERVER_START = "resonfl.server.start"
SERVER_AGGREGATE = "resonfl.server.aggregate"
SERVER_FOLD = "resonfl.server.fold"
SERVER_RECONCILE = "resonfl.server.reconcile"

# A killed worker's unacked message comes back only after this long (see ARCHITECTURE
# "Pitfalls"); the job store re-dispatches lost site tasks long before, so keep it long
# enough that a running round is never delivered twice by the broker itself.
VISIBILITY_TIMEOUT_S = 6 * 3600


class HasBroker(Protocol):
    redis_url: str | None


def site_queue(site: str) -> str:
    return f"site.{site}"


def make_celery(settings: HasBroker | str) -> Celery:
    """A Celery app on the settings' Redis URL (or a URL given directly); lowercase keys."""
    url = settings if isinstance(settings, str) else settings.redis_url
    if not url:
        raise ValueError("no broker: set RESONFL_REDIS_URL (or use `resonfl up`, which embeds one)")
    app = Celery("resonfl", broker=url, set_as_current=True)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=SERVER_QUEUE,
        task_create_missing_queues=True,
        task_routes={"resonfl.server.*": {"queue": SERVER_QUEUE}},
        task_acks_late=False,  # per task: only the idempotent server tasks ack late
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
    )
    return app


def register_tasks(app: Celery, role: str) -> None:
    """Import the task modules of a role ('site' or 'server') so the worker knows them."""
    if role not in ("site", "server"):
        raise ValueError(f"unknown worker role {role!r}")
    importlib.import_module(f"resonfl_server.workers.tasks.{role}")
    app.loader.import_default_modules()
