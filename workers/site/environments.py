"""A job's requirements on this site: built (or found in the cache) before its first round
here, reported to the server once, then on the job process's PYTHONPATH for every round."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import httpx

from resonfl.runner.requirements import EnvReport, RequirementsError, build_env
from resonfl_server.workers.site.api import SiteAPI
from resonfl_server.workers.site.config import SiteConfig

log = logging.getLogger("resonfl.site")

_READY: dict[int, Path | None] = {}  # job id -> its environment folder (None: no requirements)
_LOCK = threading.Lock()


def prepare_requirements(
    api: SiteAPI, cfg: SiteConfig, job_id: int, requirements: list[str]
) -> Path | None:
    """The folder to put on the job process's PYTHONPATH, or None when the job asks for
    nothing. Raises `RequirementsError` (reported to the server too) when it cannot be made."""
    with _LOCK:
        if job_id in _READY:
            return _READY[job_id]
        try:
            report = build_env(requirements, cfg.requirements, cfg.env_cache(), site=cfg.site)
        except RequirementsError as exc:
            _report(api, job_id, {"error": str(exc), "policy": cfg.requirements.describe(),
                                  "requirements": requirements})
            raise
        if report is None:
            _READY[job_id] = None
            return None
        _report(api, job_id, report.to_json())
        log.info("job %s requirements: %s", job_id, _summary(report))
        _READY[job_id] = Path(report.path)
        return _READY[job_id]


def _summary(report: EnvReport) -> str:
    how = "cached" if report.cached else f"built in {report.seconds:.1f} s"
    return f"{', '.join(report.packages) or 'nothing new'} ({how})"


def _report(api: SiteAPI, job_id: int, body: dict[str, object]) -> None:
    try:
        api.environment(job_id, body)
    except httpx.HTTPError as exc:  # the job still runs; only the page lacks the line
        log.warning("could not report job %s's environment: %s", job_id, exc)
