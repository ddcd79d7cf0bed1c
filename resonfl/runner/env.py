"""The environment a job process starts with: an allow-list, never the worker's own."""

from __future__ import annotations

import os
from pathlib import Path


# Variables a job process may inherit; everything else is dropped.
ALLOWED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")


def base_env(env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment every job process starts with."""
    env = {k: os.environ[k] for k in ALLOWED_ENV if k in os.environ}
    env.update(
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        PYTHONHASHSEED="0",
    )
    env.update(env_extra or {})
    return env


def folder_env(work_dir: Path) -> dict[str, str]:
    """HOME and temp folders inside the run's own folder."""
    tmp = work_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(work_dir), "TMPDIR": str(tmp), "MPLCONFIGDIR": str(tmp)}


def scrubbed_env(work_dir: Path, env_extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**base_env(env_extra), **folder_env(work_dir)}
