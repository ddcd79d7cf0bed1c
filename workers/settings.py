"""A site worker's settings: broker, API, site name and token; no database, no server secret.

`resonfl_server.workers.site.config.SiteConfig.from_settings` turns them into the running worker's config;
this module imports nothing of the worker, so the two never import each other.

Flags of `resonfl worker` override these `RESONFL_*` variables (a container sets the token
through the environment so it never shows in `ps`).
"""

from __future__ import annotations

import os

from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from resonfl.runner.confine import Limits, Sandbox
from resonfl.runner.requirements import Mode, RequirementsPolicy


class SiteWorkerSettings(BaseSettings):
    # The token as a file (resonfl_site_token in RESONFL_SECRETS_DIR, 0600), not a variable:
    # a variable stays readable in /proc/<pid>/environ (docs/security.md).
    model_config = SettingsConfigDict(
        env_prefix="RESONFL_",
        extra="ignore",
        secrets_dir=os.environ.get("RESONFL_SECRETS_DIR") or None,
    )

    site_name: str = ""
    site_token: str = ""
    api_url: str = "http://127.0.0.1:8000"
    broker_url: str = "redis://127.0.0.1:6379/0"
    worker_data_root: Path = Path("./site-data")
    gpus: str | None = Field(None, description="comma-separated GPU indices; empty: no GPU")
    heartbeat_s: float = Field(10.0, gt=0)
    site_settings: Path | None = Field(
        None, description="TOML file: [datasets.NAME] and [policy] (workers/site/policy.py)"
    )


class SandboxSettings(BaseSettings):
    """How job code is confined on this machine (site workers and the aggregator); see
    docs/security.md. Limits apply per job process; 0 lifts one."""

    model_config = SettingsConfigDict(env_prefix="RESONFL_SANDBOX_", extra="ignore")

    memory_mb: int | None = Field(None, ge=0, description="data segment cap; default half the RAM")
    processes: int = Field(4096, ge=0, description="processes+threads of the job uid (65534)")
    open_files: int = Field(4096, ge=0)
    cpu_time_s: int = Field(7 * 24 * 3600, ge=0, description="CPU seconds per job process")
    output_mb: int = Field(16384, ge=0, description="largest file a job process may write")
    network: bool = Field(False, description="let job code reach the network")

    def to_sandbox(self, unsafe_no_sandbox: bool = False) -> Sandbox:
        """The `Sandbox` these settings describe; ``require`` unless the operator opted out."""
        limits = Limits(
            processes=self.processes,
            open_files=self.open_files,
            cpu_time_s=self.cpu_time_s,
            output_mb=self.output_mb,
        )
        if self.memory_mb is not None:
            limits = replace(limits, memory_mb=self.memory_mb)
        mode: Literal["require", "off"] = "off" if unsafe_no_sandbox else "require"
        return Sandbox(mode=mode, limits=limits, network=self.network)


class RequirementsSettings(BaseSettings):
    """Whether and how this site installs a job's requirements.txt (docs/deploy.md,
    `resonfl.runner.requirements`). This is the site's policy knob for job packages."""

    model_config = SettingsConfigDict(env_prefix="RESONFL_REQUIREMENTS_", extra="ignore")

    policy: Mode = Field("off", description="off | allow-list | any")
    allow: str = Field("", description="comma-separated package names (policy allow-list)")
    index_url: str | None = Field(None, description="package index; default PyPI")
    find_links: str = Field("", description="comma-separated folders/URLs of wheels")
    no_index: bool = Field(False, description="only find_links, never an index")
    cache: Path | None = Field(None, description="default <data root>/requirements-cache")

    def to_policy(self) -> RequirementsPolicy:
        return RequirementsPolicy(
            mode=self.policy,
            allow=frozenset(n.strip() for n in self.allow.split(",") if n.strip()),
            index_url=self.index_url or None,
            find_links=tuple(f.strip() for f in self.find_links.split(",") if f.strip()),
            no_index=self.no_index,
        )


def parse_gpus(value: str | None) -> list[str] | None:
    """`"0, 1"` -> `["0", "1"]`; `""` -> `[]` (no GPU); None -> None (every GPU)."""
    if value is None:
        return None
    return [g.strip() for g in value.split(",") if g.strip()]
