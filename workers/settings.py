"""A site worker's settings: broker, API, site name and token; no database, no server secret.

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

    def to_config(self):  # type: ignore[no-untyped-def]
        from workers.site_worker import SiteConfig

        return SiteConfig(
            site=self.site_name,
            token=self.site_token,
            api_url=self.api_url,
            data_root=self.worker_data_root,
            gpus=parse_gpus(self.gpus),
            heartbeat_s=self.heartbeat_s,
        )


def parse_gpus(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [g.strip() for g in value.split(",") if g.strip()]
