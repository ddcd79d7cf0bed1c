"""The platform's Python client: submit a job, follow it, download its models.

client = Client("http://127.0.0.1:8000", token)
job_id = client.submit(job)            # a resonfl.job.Job or a job folder
client.wait(job_id)                    # a progress bar of rounds
client.download(job_id, "model.pt")    # model_out/checkpoint.pt
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Self

import httpx

from resonfl.compare import CompareTable
from resonfl.http import NO_RETRY, ApiClient, RetryPolicy
from resonfl.job import SHARDS_DIR, Job

API = "/api/v1"
WAIT_RETRY = RetryPolicy(budget_s=60.0)
TERMINAL = ("finished", "failed", "cancelled")


class ApiError(RuntimeError):
    """The server answered with an error; `detail` is its explanation (for a refused job:
    {"file", "field", "message"})."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class JobFailed(RuntimeError):
    """`wait` saw the job end as failed or cancelled."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(
            f"job {job['id']} {job['status']}: {job.get('error') or 'no reason given'}"
        )
        self.job = job


class Client(ApiClient):
    """The SDK client. Reads are retried per `retry` (default: none, so a CLI command against
    a server that is down says so at once); `wait` rides out a restarting API."""

    def __init__(
        self, url: str, token: str, timeout: float = 300.0, retry: RetryPolicy = NO_RETRY
    ) -> None:
        super().__init__(url, token, timeout_s=timeout, retry=retry)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, job: Job | str | Path) -> int:
        """Upload a job (rendered to a temporary folder first if given a Job); return its id.
        The folder goes up as one zip, each site's shard as its own zip."""
        with tempfile.TemporaryDirectory(prefix="resonfl-submit-") as tmp:
            folder = job.render(Path(tmp) / "job") if isinstance(job, Job) else Path(job)
            if not (folder / "meta.json").is_file():
                raise FileNotFoundError(f"{folder} is not a job folder (no meta.json)")
            parts = Path(tmp) / "parts"
            parts.mkdir()
            job_zip = _zip(parts / "job.zip", folder, skip_shards=True)
            shard_zips = [
                _zip(parts / f"{site.name}.zip", site)
                for site in sorted((folder / SHARDS_DIR).glob("*"))
                if site.is_dir()
            ]
            with ExitStack() as stack:
                files: list[tuple[str, tuple[str, Any, str]]] = [
                    (
                        "job_zip",
                        ("job.zip", stack.enter_context(job_zip.open("rb")), "application/zip"),
                    )
                ]
                for path in shard_zips:
                    handle = stack.enter_context(path.open("rb"))
                    files.append(("shards", (path.name, handle, "application/zip")))
                response = self.http.post("/jobs", files=files)
        return int(self._json(response)["id"])

    def status(self, job_id: int) -> dict[str, Any]:
        """The job with its rounds and each site's result (status, samples, metrics)."""
        return dict(self._json(self.request("GET", f"/jobs/{job_id}")))

    def list_jobs(self) -> list[dict[str, Any]]:
        return list(self._json(self.request("GET", "/jobs"))["data"])

    def cancel(self, job_id: int) -> dict[str, Any]:
        return dict(self._json(self.http.post(f"/jobs/{job_id}/cancel")))

    def twin(self, job_id: int) -> dict[str, Any]:
        """Start the job's centralized twin (its recipe on the pooled shards, one site, same
        total optimizer steps); returns the twin job. ApiError 409 says why it cannot run."""
        return dict(self._json(self.http.post(f"/jobs/{job_id}/twin")))

    def twin_comparison(self, job_id: int) -> dict[str, Any]:
        """FL vs its latest centralized twin: curves per metric, gap, share closed per round."""
        return dict(self._json(self.request("GET", f"/jobs/{job_id}/twin")))

    def compare(self, ids: list[int]) -> CompareTable:
        """Two or more jobs side by side: one row per job with the settings that differ, the
        final metrics and their difference from the first job (`print` it; `.raw` has the
        curves; `.to_pandas()` when pandas is installed)."""
        params = {"jobs": ",".join(str(i) for i in ids)}
        return CompareTable.from_api(self._json(self.request("GET", "/compare", params=params)))

    def download_tensorboard(self, job_id: int, path: str | Path | None = None) -> Path:
        """Save the job's TensorBoard event files (a zip: global and per site) to `path`."""
        target = Path(path) if path is not None else Path.cwd() / f"job-{job_id}-tensorboard.zip"
        response = self.request("GET", f"/jobs/{job_id}/tensorboard")
        if response.status_code >= 400:
            self._json(response)
        target.write_bytes(response.content)
        return target

    def logs(self, job_id: int, site: str | None = None) -> dict[str, Any]:
        """{site: [{round, status, error, log}]}: each site's captured output per round."""
        params = {"site": site} if site else None
        return dict(self._json(self.request("GET", f"/jobs/{job_id}/logs", params=params))["sites"])

    def sites(self) -> list[dict[str, Any]]:
        return list(self._json(self.request("GET", "/sites"))["data"])

    def wait(
        self,
        job_id: int,
        progress: bool = True,
        poll_s: float = 1.0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends; show a bar of finished rounds. Returns the finished job;
        raises JobFailed if it failed or was cancelled, TimeoutError after `timeout` s."""
        from tqdm import tqdm  # lazy: progress bar

        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.status(job_id)
        bar = tqdm(
            total=job["num_rounds"], desc=f"job {job_id}", unit="round", disable=not progress
        )
        try:
            while True:
                done = sum(1 for r in job["rounds"] if r["status"] == "done")
                bar.update(done - bar.n)
                bar.set_postfix_str(job["status"])
                if job["status"] in TERMINAL:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
                time.sleep(poll_s)
                job = self._poll(job_id)
        finally:
            bar.close()
        if job["status"] != "finished":
            raise JobFailed(job)
        return job

    def download(
        self, job_id: int, path: str | Path | None = None, round: int | None = None
    ) -> Path:
        """Save model_out/checkpoint.pt (or GLOBAL_MODEL_round_N.pt with `round`) to `path`
        (a file, or a folder to put it in; default the current folder)."""
        url = (
            f"/jobs/{job_id}/download"
            if round is None
            else f"/jobs/{job_id}/rounds/{round}/download"
        )
        name = (
            f"job-{job_id}-checkpoint.pt"
            if round is None
            else f"job-{job_id}-GLOBAL_MODEL_round_{round}.pt"
        )
        target = Path(path) if path is not None else Path.cwd() / name
        if target.is_dir():
            target = target / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        with self.http.stream("GET", url) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
        partial.replace(target)
        return target

    # -- plumbing ----------------------------------------------------------------------------
    def _poll(self, job_id: int) -> dict[str, Any]:
        """`status` for `wait`: an API that restarts while a job runs is waited for."""
        retry = self.retry if self.retry.budget_s > 0 else WAIT_RETRY
        return dict(self._json(self.request("GET", f"/jobs/{job_id}", retry=retry)))

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json()


def _zip(target: Path, folder: Path, skip_shards: bool = False) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if skip_shards and rel.parts[0] == SHARDS_DIR:
                continue
            if path.is_file() and not path.is_symlink():
                out.write(path, rel.as_posix())
    return target
