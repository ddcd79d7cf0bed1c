"""The running site worker's configuration and the GPUs it may use."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resonfl_server.workers.settings import SiteWorkerSettings, parse_gpus


@dataclass
class SiteConfig:
    site: str
    token: str
    api_url: str
    data_root: Path
    gpus: list[str] | None = None  # None: every GPU nvidia-smi sees; []: none
    heartbeat_s: float = 10.0
    threads: int | None = None  # OMP/MKL threads of a job process

    @classmethod
    def from_settings(cls, s: SiteWorkerSettings) -> SiteConfig:
        return cls(
            site=s.site_name,
            token=s.site_token,
            api_url=s.api_url,
            data_root=s.worker_data_root,
            gpus=parse_gpus(s.gpus),
            heartbeat_s=s.heartbeat_s,
        )

    def visible_gpus(self) -> list[dict[str, Any]]:
        found = nvidia_smi()
        if self.gpus is None:
            return found
        by_index = {str(g["index"]): g for g in found}
        return [by_index.get(i, {"index": i, "name": "unknown"}) for i in self.gpus]


def nvidia_smi() -> list[dict[str, Any]]:
    """GPUs as nvidia-smi sees them, without touching CUDA in this process."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in io.StringIO(out):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append({"index": parts[0], "name": parts[1], "memory_mb": int(float(parts[2]))})
    return gpus


_config: SiteConfig | None = None


def install(cfg: SiteConfig) -> None:
    global _config
    _config = cfg


def site_config() -> SiteConfig:
    """The running worker's config (set by `resonfl worker`, or from RESONFL_SITE_* vars)."""
    global _config
    if _config is None:
        _config = SiteConfig.from_settings(SiteWorkerSettings())
    return _config
