"""The running site worker's configuration and the GPUs it may use."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resonfl.runner.requirements import RequirementsPolicy
from resonfl_server.workers.settings import (
    RequirementsSettings,
    SandboxSettings,
    SiteWorkerSettings,
    parse_gpus,
)
from resonfl_server.workers.site.datasets import (
    DatasetReport,
    SiteDataset,
    check_unique,
    inspect,
    parse_flag,
)
from resonfl_server.workers.site.policy import SitePolicy, load_settings_file


def requirements_policy() -> str:
    """Whether this site installs a job's requirements, as the heartbeat reports it:
    RESONFL_REQUIREMENTS_POLICY (off / allow-list / any)."""
    return RequirementsSettings().policy


@dataclass
class SiteConfig:
    site: str
    token: str
    api_url: str
    data_root: Path
    gpus: list[str] | None = None  # None: every GPU nvidia-smi sees; []: none
    heartbeat_s: float = 10.0
    threads: int | None = None  # OMP/MKL threads of a job process
    requirements: RequirementsPolicy = field(default_factory=RequirementsPolicy)
    requirements_cache: Path | None = None  # default <data_root>/requirements-cache
    datasets: list[SiteDataset] = field(default_factory=list)  # what the operator declared
    reports: list[DatasetReport] = field(default_factory=list)  # counted at start
    policy: SitePolicy = field(default_factory=SitePolicy)

    def dataset(self, name: str) -> SiteDataset | None:
        return next((d for d in self.datasets if d.name == name), None)

    @classmethod
    def from_settings(cls, s: SiteWorkerSettings) -> SiteConfig:
        return cls(
            site=s.site_name,
            token=s.site_token,
            api_url=s.api_url,
            data_root=s.worker_data_root,
            gpus=parse_gpus(s.gpus),
            heartbeat_s=s.heartbeat_s,
            requirements=(req := RequirementsSettings()).to_policy(),
            requirements_cache=req.cache,
        )

    def env_cache(self) -> Path:
        return self.requirements_cache or self.data_root / "requirements-cache"

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


def declare(
    cfg: SiteConfig,
    settings_file: Path | None,
    dataset_flags: list[str],
    require_approval: bool = False,
) -> None:
    """Load the settings file and the `--dataset` flags into `cfg`, then check and count each
    dataset; raises DatasetError / PolicyError with a message naming what is wrong (the
    worker refuses to start rather than advertise data it cannot read)."""
    datasets, policy = ([], SitePolicy())
    if settings_file is not None:
        datasets, policy = load_settings_file(settings_file)
    flagged = [parse_flag(v) for v in dataset_flags]
    names = {d.name for d in flagged}
    datasets = [d for d in datasets if d.name not in names] + flagged  # a flag overrides the file
    check_unique(datasets)
    policy.require_approval = policy.require_approval or require_approval
    sandbox = SandboxSettings()
    policy.network = sandbox.network
    policy.requirements = requirements_policy()
    cfg.datasets, cfg.policy = datasets, policy
    cfg.reports = [inspect(d) for d in datasets]
