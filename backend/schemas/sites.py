"""Sites as users and admins see them, and what site workers send."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from resonfl_server.backend.models import INT_MAX, DecisionStatus, ResultStatus, SiteStatus
from resonfl_server.backend.schemas.common import CleanStr, FiniteFloat, clean_json
from resonfl_server.backend.schemas.phases import RoundPhases, SandboxApplied
from resonfl.config import DATASET_NAME_RE, SITE_NAME_RE

DatasetFormat = Literal["image-folder", "npz", "csv", "files"]


class SiteDatasetPublic(BaseModel):
    """A dataset a site holds, as its worker counted it: never file names or contents."""

    name: str = Field(pattern=DATASET_NAME_RE.pattern)
    format: DatasetFormat
    description: CleanStr = Field("", max_length=200)
    samples: int = Field(ge=0, le=INT_MAX)
    labels: dict[Annotated[CleanStr, Field(max_length=200)], Annotated[int, Field(ge=0)]] | None = (
        Field(
            None,
            max_length=1000,
            description="samples per label (class), where the format has labels",
        )
    )


class SitePolicyPublic(BaseModel):
    """What a site lets run (its worker's settings; the worker enforces them itself)."""

    submitters: list[Annotated[CleanStr, Field(max_length=320)]] | None = Field(
        None, max_length=1000, description="e-mails whose jobs the site runs; null: anyone"
    )
    require_approval: bool = Field(False, description="each job waits for the site's operator")
    max_gpus: int | None = Field(None, ge=0)
    max_wall_time_s: FiniteFloat | None = Field(None, gt=0)
    network: bool = Field(False, description="job code may use the network")
    requirements: CleanStr = Field("off", max_length=40, description="requirements.txt installs")


class SiteCreate(BaseModel):
    name: str = Field(pattern=SITE_NAME_RE.pattern)


class SitePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: SiteStatus
    online: bool = Field(False, description="heard from within site_heartbeat_timeout_s")
    last_heartbeat: datetime | None
    gpus: list[dict[str, Any]]
    datasets: list[SiteDatasetPublic] = Field(default_factory=list)
    policy: SitePolicyPublic | None = Field(None, description="null until the worker reports")
    created_at: datetime


class SitesPublic(BaseModel):
    data: list[SitePublic]
    count: int


class SiteCreated(SitePublic):
    token: str = Field(description="the site token; shown only once, stored as sha256")


class HeartbeatIn(BaseModel):
    status: Literal["idle", "busy"] = "idle"
    gpus: Annotated[list[dict[str, Any]], AfterValidator(clean_json)] = Field(
        default_factory=list, description="what the worker sees, e.g. [{index, name, memory_mb}]"
    )
    datasets: list[SiteDatasetPublic] = Field(default_factory=list, max_length=1000)
    policy: SitePolicyPublic = Field(default_factory=SitePolicyPublic)


class HeartbeatOut(BaseModel):
    site: str
    server_time: datetime


class SiteStateIn(BaseModel):
    state: Literal["queued", "training", "uploading", "failed"]
    error: CleanStr | None = Field(None, max_length=20000)
    log: str | None = Field(None, description="the job output so far (stored as the site's log)")
    sandbox: SandboxApplied | None = Field(
        None,
        description="the sandbox the site applied to the job code that ran (failed rounds too)",
    )


class SiteEnvironmentIn(BaseModel):
    """What a site installed for a job's requirements.txt, or why it could not."""

    requirements: list[CleanStr] = Field(default_factory=list, max_length=500)
    packages: list[CleanStr] = Field(default_factory=list, max_length=2000)
    satisfied: list[CleanStr] = Field(default_factory=list, max_length=2000)
    seconds: float | None = Field(None, ge=0, le=86400)
    cached: bool = False
    digest: CleanStr | None = Field(None, max_length=64)
    policy: CleanStr | None = Field(None, max_length=2000)
    error: CleanStr | None = Field(None, max_length=20000)


class SiteEnvironmentPublic(SiteEnvironmentIn):
    site: str


class ResultMeta(BaseModel):
    """The JSON part (`meta` form field) of a result upload."""

    samples: int = Field(ge=0, le=INT_MAX)
    metrics: dict[CleanStr, FiniteFloat] = Field(
        default_factory=dict, description="finite numbers, averaged over sites by samples"
    )
    train_s: FiniteFloat | None = Field(None, ge=0)
    total_s: FiniteFloat | None = Field(None, ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the weights file")
    log: str | None = None
    phases: RoundPhases | None = Field(None, description="where the round's time went")
    sandbox: SandboxApplied | None = Field(None, description="the sandbox the site applied")


class ResultAccepted(BaseModel):
    job_id: int
    round: int
    site: str
    status: ResultStatus
    sha256: str
    duplicate: bool = Field(False, description="the same update was already recorded")


class SiteJobPublic(BaseModel):
    """What a site worker may know about a job it takes part in."""

    id: int
    name: str
    status: str
    num_rounds: int
    current_round: int | None
    sites: list[str]
    min_clients: int
    submitter: str = Field("", description="the e-mail of the user who submitted the job")
    dataset: str | None = Field(None, description="the site dataset the job trains on")
    approved_by: list[str] = Field(
        default_factory=list, description="sites whose operator approved the job"
    )


class DecisionIn(BaseModel):
    """A site operator's decision on a job (`resonfl site approve|reject`)."""

    operator: CleanStr = Field(min_length=1, max_length=200, description="who decides, at the site")
    reason: CleanStr | None = Field(None, max_length=2000, description="why (required to reject)")


class SiteDecisionPublic(BaseModel):
    """One site's decision on a job: who, when, why (kept for good)."""

    model_config = ConfigDict(from_attributes=True)

    site: str
    status: DecisionStatus
    operator: str | None
    reason: str | None
    requested_at: datetime
    decided_at: datetime | None


class SiteApprovalPublic(BaseModel):
    """A job that asked this site for a decision, as the site's operator sees it."""

    job_id: int
    name: str
    submitter: str
    submitted_at: datetime
    job_status: str
    sites: list[str]
    dataset: str | None
    decision: SiteDecisionPublic


class SiteApprovalsPublic(BaseModel):
    data: list[SiteApprovalPublic]
    count: int


class SiteJobFiles(BaseModel):
    """The six files of a job and who submitted it: what an operator reads before deciding."""

    id: int
    name: str
    submitter: str
    files: dict[str, str]


# -- secure aggregation (services/secagg.py) ------------------------------------------------
class SecAggKeysIn(BaseModel):
    """Stage 1: this site's two X25519 public keys (base64, 32 bytes each)."""

    c: str = Field(max_length=64, description="the key that encrypts shares for this site")
    s: str = Field(max_length=64, description="the key its pair masks are agreed with")


class SecAggSharesIn(BaseModel):
    """Stage 2: per neighbour, the encrypted shares of this site's secrets (base64)."""

    boxes: dict[str, str] = Field(max_length=1000)


class SecAggUnmaskIn(BaseModel):
    """Stage 4: per neighbour, this site's share of its self-mask seed (a survivor) or of its
    mask key (a dropped site), as a decimal string."""

    shares: dict[str, str] = Field(max_length=1000)


class SecAggStatePublic(BaseModel):
    """A round's secure-aggregation stage as one site may see it."""

    job_id: int
    round: int
    stage: Literal["keys", "shares", "masked", "unmask", "ready"]
    stage_deadline: str | None = None
    size: int = Field(description="length of each masked vector")
    round_status: str
    job_status: str
    result_status: str = Field(description="this site's result in the round")
    sites: list[str] | None = Field(None, description="whose keys the key exchange took")
    keys: dict[str, dict[str, str]] | None = None
    sharers: list[str] | None = Field(None, description="who shared: the sites of the sum")
    inbox: dict[str, str] | None = Field(None, description="sender -> shares for this site")
    survivors: list[str] | None = None
    dropped: list[str] | None = None
