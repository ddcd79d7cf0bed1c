"""A site worker's settings: broker, API, site name and token; no database, no server secret.

`workers.site_worker.SiteConfig.from_settings` turns them into the running worker's config;
this module imports nothing of the worker, so the two never import each other.

Flags of `resonfl worker` override these `RESONFL_*` variables (a container sets the token
through the environment so it never shows in `ps`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SiteWorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESONFL_", extra="ignore")

    site_name: str = ""
    site_token: str = ""
    api_url: str = "http://127.0.0.1:8000"
    broker_url: str = "redis://127.0.0.1:6379/0"
    worker_data_root: Path = Path("./site-data")
    gpus: str | None = Field(None, description="comma-separated GPU indices; empty: no GPU")
    heartbeat_s: float = Field(10.0, gt=0)


def parse_gpus(value: str | None) -> list[str] | None:
    """`"0, 1"` -> `["0", "1"]`; `""` -> `[]` (no GPU); None -> None (every GPU)."""
    if value is None:
        return None
    return [g.strip() for g in value.split(",") if g.strip()]
