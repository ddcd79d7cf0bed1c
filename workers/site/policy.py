"""What a site lets run on its machine, and the settings file that declares it.

The operator decides, in the worker's settings: whose jobs run here (any submitter, or a
list of e-mails), whether each job waits for the operator's approval (`resonfl site approve`),
the most GPUs and wall time one job may take, whether job code may use the network (the
sandbox's own `RESONFL_SANDBOX_NETWORK`, reported here, never a second switch) and whether a
job's requirements may be installed (`RESONFL_REQUIREMENTS_POLICY`, read by the requirements
installer, reported here). The heartbeat reports the policy, so the server can hold a job
for approval and say why a site refused; the worker itself enforces it on every round
(`check_job`), so a site never depends on the server for its own rules.

Settings file (TOML; `resonfl worker --settings site.toml` or `RESONFL_SITE_SETTINGS`):

    [datasets.images]
    path = "/data/images"
    format = "image-folder"          # optional: guessed from the files
    description = "scanned digits, 10 classes"

    [policy]
    submitters = ["alice@example.org"]   # or "any" (the default)
    require_approval = true
    max_gpus = 1
    max_wall_time_s = 7200
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from resonfl_server.workers.site.datasets import DatasetError, SiteDataset, from_table

POLICY_KEYS = ("submitters", "require_approval", "max_gpus", "max_wall_time_s")
ELSEWHERE = {
    "network": "RESONFL_SANDBOX_NETWORK (the sandbox's setting)",
    "requirements": "RESONFL_REQUIREMENTS_POLICY (the requirements installer's setting)",
}


class PolicyError(ValueError):
    """The settings file or a policy value is wrong; the message names the key."""


@dataclass
class SitePolicy:
    """A site's rules for the jobs it runs."""

    submitters: list[str] | None = None  # None: any submitter
    require_approval: bool = False
    max_gpus: int | None = None
    max_wall_time_s: float | None = None
    network: bool = False  # reported from the sandbox settings
    requirements: str = "off"  # reported from the requirements installer's settings

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def refusal(self, job: dict[str, Any], gpus_per_site: int, site: str) -> str | None:
        """Why this site will not run `job` (the site API's view of it), or None."""
        owner = job.get("submitter")
        if self.submitters is not None and owner not in self.submitters:
            return (
                f"site {site!r} runs only jobs of {', '.join(self.submitters) or 'no one'}; "
                f"this job was submitted by {owner}"
            )
        if self.max_gpus is not None and gpus_per_site > self.max_gpus:
            return (
                f"site {site!r} gives a job at most {self.max_gpus} GPU(s); "
                f"meta.json resource_spec asks for {gpus_per_site}"
            )
        if self.require_approval and site not in (job.get("approved_by") or []):
            return (
                f"site {site!r} runs a job only once its operator approved it "
                "(resonfl site approve)"
            )
        return None


def load_settings_file(path: Path) -> tuple[list[SiteDataset], SitePolicy]:
    """The datasets and the policy a settings file declares (both optional)."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not TOML: {exc}") from None
    unknown = sorted(set(data) - {"datasets", "policy"})
    if unknown:
        raise PolicyError(f"{path}: unknown table [{unknown[0]}] (datasets, policy)")
    tables = data.get("datasets", {})
    if not isinstance(tables, dict):
        raise PolicyError(f"{path}: [datasets.NAME] tables, one per dataset")
    datasets = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise PolicyError(f"{path}: datasets.{name} must be a table with path = ...")
        try:
            datasets.append(from_table(name, table, f"{path}: datasets.{name}"))
        except DatasetError as exc:
            raise PolicyError(str(exc)) from None
    return datasets, parse_policy(data.get("policy", {}), f"{path}: policy")


def parse_policy(table: Any, where: str) -> SitePolicy:
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: must be a table")
    for key in table:
        if key in ELSEWHERE:
            raise PolicyError(f"{where}.{key}: set it with {ELSEWHERE[key]}")
        if key not in POLICY_KEYS:
            raise PolicyError(f"{where}.{key}: unknown key ({', '.join(POLICY_KEYS)})")
    policy = SitePolicy()
    submitters = table.get("submitters", "any")
    if submitters != "any":
        if not isinstance(submitters, list) or not all(
            isinstance(s, str) and "@" in s for s in submitters
        ):
            raise PolicyError(f'{where}.submitters: "any" or a list of e-mail addresses')
        policy.submitters = [s.strip().lower() for s in submitters]
    approval = table.get("require_approval", False)
    if not isinstance(approval, bool):
        raise PolicyError(f"{where}.require_approval: true or false")
    policy.require_approval = approval
    gpus = table.get("max_gpus")
    if gpus is not None and (not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0):
        raise PolicyError(f"{where}.max_gpus: a whole number >= 0")
    policy.max_gpus = gpus
    wall = table.get("max_wall_time_s")
    if wall is not None and (
        isinstance(wall, bool) or not isinstance(wall, int | float) or wall <= 0
    ):
        raise PolicyError(f"{where}.max_wall_time_s: seconds, a number > 0")
    policy.max_wall_time_s = None if wall is None else float(wall)
    return policy
