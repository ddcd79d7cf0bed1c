"""A job's files on the site: its bundle (downloaded once) and this site's data."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx

from resonfl.archives import safe_extract
from resonfl_server.workers.site.api import SiteAPI
from resonfl_server.workers.site.config import SiteConfig

BUNDLE_MAX_BYTES = 1 << 40  # a bound on what a download may unpack to, far above any job


def ensure_bundle(api: SiteAPI, cfg: SiteConfig, job_id: int) -> Path:
    """The job folder, downloaded once per job and unpacked atomically."""
    folder = cfg.data_root / "jobs" / str(job_id) / "job"
    if (folder / "meta.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f"job.{uuid.uuid4().hex[:8]}.tmp"
    zpath = folder.parent / f"bundle.{uuid.uuid4().hex[:8]}.zip"
    try:
        api.download(f"/site/jobs/{job_id}/bundle", zpath)
        extract_download(zpath, staging)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
    finally:
        zpath.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def fetch_data_root(
    api: SiteAPI, cfg: SiteConfig, job_id: int, job_dir: Path, dataset: str | None = None
) -> Path:
    """This site's data: the registered `dataset` the job names (data that never leaves the
    site: the usual FL case), else the shard inside the bundle, else the uploaded shard zip,
    else the site's unnamed ``<data-root>/data``."""
    if dataset is not None:
        declared = cfg.dataset(dataset)
        if declared is None:  # refused earlier (rounds.refusal); never a silent fallback
            raise LookupError(f"site {cfg.site!r} holds no dataset {dataset!r}")
        return declared.path
    inside = job_dir / "shards" / cfg.site
    if inside.is_dir():
        return inside
    target = cfg.data_root / "jobs" / str(job_id) / "data"
    if target.is_dir():
        return target
    zpath = target.with_suffix(".zip")
    try:
        api.download(f"/site/jobs/{job_id}/shard", zpath)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
        local = cfg.data_root / "data"
        local.mkdir(parents=True, exist_ok=True)
        return local
    staging = target.with_name("data.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    extract_download(zpath, staging)
    staging.rename(target)
    zpath.unlink(missing_ok=True)
    return target


def extract_download(zpath: Path, target: Path) -> None:
    """Unzip a download from the server with the one extractor (`resonfl.archives`): the
    server is trusted, but not blindly (no `..`, absolute paths or symlinks)."""
    target.mkdir(parents=True)
    with zpath.open("rb") as source:
        safe_extract(source, target, zpath.name, max_bytes=BUNDLE_MAX_BYTES)
