"""The site endpoints of the API, spoken with the site token (retried, `resonfl.http`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from resonfl.http import NO_RETRY, ApiClient, RetryPolicy, raise_if_retryable
from resonfl_server.workers.site.config import SiteConfig

# A round's requests ride out an API restart of up to about two minutes.
ROUND_RETRY = RetryPolicy(budget_s=120.0)


class SiteAPI(ApiClient):
    """The site endpoints of the API, authenticated with the site token.

    Everything a round needs (job info, weights download, state reports, the upload) is
    retried with backoff on connection errors (`resonfl.http`), so an API that restarts
    mid-round costs the round a few seconds, not a re-dispatch; the heartbeat is not (the
    next beat comes soon anyway)."""

    def __init__(
        self, cfg: SiteConfig, timeout_s: float = 60.0, retry: RetryPolicy = ROUND_RETRY
    ) -> None:
        super().__init__(cfg.api_url, cfg.token, timeout_s=timeout_s, retry=retry)
        self.cfg = cfg

    def heartbeat(self, status: str, gpus: list[dict[str, Any]]) -> None:
        """Alive, idle or busy; with the GPUs, the datasets' counts and the policy."""
        body = {
            "status": status,
            "gpus": gpus,
            "datasets": [r.as_dict() for r in self.cfg.reports],
            "policy": self.cfg.policy.as_dict(),
        }
        self.request("POST", "/site/status", json=body, retry=NO_RETRY).raise_for_status()

    def job(self, job_id: int, retry: RetryPolicy | None = None) -> dict[str, Any]:
        resp = self.request("GET", f"/site/jobs/{job_id}", retry=retry)
        resp.raise_for_status()
        return dict(resp.json())

    def approvals(self, include_decided: bool = False) -> list[dict[str, Any]]:
        """Jobs awaiting this site's decision (or every job that asked it)."""
        params = {"include_decided": "true"} if include_decided else {}
        resp = self.request("GET", "/site/approvals", params=params, retry=NO_RETRY)
        resp.raise_for_status()
        return list(resp.json()["data"])

    def files(self, job_id: int) -> dict[str, Any]:
        """A job's six files and its submitter."""
        resp = self.request("GET", f"/site/jobs/{job_id}/files", retry=NO_RETRY)
        resp.raise_for_status()
        return dict(resp.json())

    def decide(
        self, job_id: int, approve: bool, operator: str, reason: str | None
    ) -> dict[str, Any]:
        """Approve or reject a job awaiting this site; returns the recorded decision."""
        verb = "approve" if approve else "reject"
        body = {"operator": operator, "reason": reason}
        resp = self.request("POST", f"/site/jobs/{job_id}/{verb}", json=body, retry=NO_RETRY)
        resp.raise_for_status()
        return dict(resp.json())

    def download(self, path: str, target: Path) -> str:
        """Stream a file to `target`, hashing it on the way; return its sha256. A dropped
        connection starts the download again."""
        return self.call(lambda http: self._download(http, path, target), f"GET {path}")

    def _download(self, http: httpx.Client, path: str, target: Path) -> str:
        digest = hashlib.sha256()
        tmp = target.with_name(target.name + ".part")
        with http.stream("GET", path) as resp:
            raise_if_retryable(resp).raise_for_status()
            with tmp.open("wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            declared = resp.headers.get("x-content-sha256")
        if declared and declared != digest.hexdigest():
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"{path}: sha256 {digest.hexdigest()} != declared {declared}")
        tmp.replace(target)
        return digest.hexdigest()

    def state(
        self,
        job_id: int,
        round_num: int,
        state: str,
        error: str | None = None,
        log_text: str | None = None,
        sandbox: dict[str, Any] | None = None,
    ) -> None:
        body = {"state": state, "error": error, "log": log_text}
        if sandbox is not None:
            body["sandbox"] = sandbox
        path = f"/site/jobs/{job_id}/rounds/{round_num}/state"
        self.request("POST", path, json=body).raise_for_status()

    def environment(self, job_id: int, report: dict[str, Any]) -> None:
        """What this site installed for the job's requirements (or why it could not)."""
        self.request("POST", f"/site/jobs/{job_id}/environment", json=report).raise_for_status()

    def upload(
        self, job_id: int, round_num: int, weights: Path, meta: dict[str, Any], attempt: int = 1
    ) -> dict[str, Any]:
        """Send the update as the raw body (the server streams it to disk, hashing as it
        arrives), meta in a header. Safe to repeat: the server keeps one result per (job,
        round, site) and answers a repeat of the same update with duplicate=true."""
        path = f"/site/jobs/{job_id}/rounds/{round_num}/result"
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(weights.stat().st_size),
            "X-Result-Meta": json.dumps(meta),
            # (job, round, site) + the site's attempt at the round: what makes a repeat a repeat
            "Idempotency-Key": f"{job_id}:{round_num}:{self.cfg.site}:{attempt}",
        }

        def send(http: httpx.Client) -> dict[str, Any]:
            with weights.open("rb") as body:
                resp = http.post(path, content=body, headers=headers)
            raise_if_retryable(resp).raise_for_status()
            return dict(resp.json())

        return self.call(send, f"POST {path}")

    def secagg(self, job_id: int, round_num: int) -> dict[str, Any]:
        """The round's secure-aggregation stage as this site may see it."""
        resp = self.request("GET", f"/site/jobs/{job_id}/rounds/{round_num}/secagg")
        resp.raise_for_status()
        return dict(resp.json())

    def secagg_post(
        self, job_id: int, round_num: int, kind: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """This site's message of stage `kind` (keys, shares, unmask); the stage after it."""
        path = f"/site/jobs/{job_id}/rounds/{round_num}/secagg/{kind}"
        resp = self.request("POST", path, json=body)
        resp.raise_for_status()
        return dict(resp.json())
