"""The heartbeat: the worker is alive, idle or busy; jobs that ended elsewhere let go."""

from __future__ import annotations

import logging
import threading

import httpx

from resonfl.http import NO_RETRY
from resonfl_server.workers.site.api import SiteAPI
from resonfl_server.workers.site.config import SiteConfig
from resonfl_server.workers.site.processes import STATE, close_job_process, job_keys

log = logging.getLogger("resonfl.site")


class Heartbeat(threading.Thread):
    """Posts the worker's status every `heartbeat_s`; failures are logged, never fatal."""

    def __init__(self, cfg: SiteConfig) -> None:
        super().__init__(name="resonfl-heartbeat", daemon=True)
        self.cfg = cfg
        self.stopped = threading.Event()
        self.api = SiteAPI(cfg, timeout_s=10.0, retry=NO_RETRY)
        self.gpus = cfg.visible_gpus()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.beat()
            self.stopped.wait(self.cfg.heartbeat_s)

    def beat(self) -> None:
        try:
            self.api.heartbeat("busy" if STATE.busy else "idle", self.gpus)
            self.release_ended_jobs()
        except httpx.HTTPError as exc:
            log.warning("heartbeat failed: %s", exc)

    def release_ended_jobs(self) -> None:
        """A job that ended elsewhere (another site failed it, its owner cancelled it) while
        this site sat between rounds must not keep a job process, and its GPU memory, here."""
        if STATE.busy:
            return
        for key in job_keys():
            status = self.api.job(int(key))["status"]
            if status != "running" and not STATE.busy:
                close_job_process(int(key))
                log.info("released job %s's process: the job is %s", key, status)

    def stop(self) -> None:
        self.stopped.set()
