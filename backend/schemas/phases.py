"""Where a round's time went, and the sandbox a site applied: typed, stored as reported.

Round 0 pays the cold start (job process, imports, first data load); its breakdown is shown
on the job page and by `resonfl status`. Every field is seconds (None: not measured).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from resonfl_server.backend.schemas.common import FiniteFloat

Seconds = Annotated[FiniteFloat, Field(ge=0, le=1e7)]


class RoundPhases(BaseModel):
    """One site's round, phase by phase, as the site worker and the job process timed it."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    prepare_s: Seconds | None = Field(None, description="job bundle and data (round 0: downloads)")
    download_s: Seconds | None = Field(None, description="the global weights over HTTP")
    process_s: Seconds | None = Field(
        None, description="job process start (Python + torch) and hand-off; small when warm"
    )
    started_process: bool | None = Field(None, description="this round started a job process")
    import_s: Seconds | None = Field(None, description="importing the job's model_def.py")
    build_s: Seconds | None = Field(None, description="the model built, holding the weights")
    data_s: Seconds | None = Field(None, description="data loading (env.load_npz)")
    eval_s: Seconds | None = Field(None, description="evaluating the global model")
    train_s: Seconds | None = Field(None, description="training, data loading excluded")
    save_s: Seconds | None = Field(None, description="writing the update")


class InitPhases(BaseModel):
    """The aggregator's initial-weights step (before round 0 opens)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    total_s: Seconds | None = Field(None, description="the whole step, as the aggregator timed it")
    process_s: Seconds | None = Field(
        None, description="job process start (Python + torch) and hand-off; small when warm"
    )
    warm: bool | None = Field(None, description="a pre-started process ran it")
    import_s: Seconds | None = Field(None, description="importing the job's model_def.py")
    build_s: Seconds | None = Field(None, description="building the model")
    save_s: Seconds | None = Field(None, description="writing the initial weights")


class SandboxApplied(BaseModel):
    """The confinement and limits a site applied to the job's process in a round."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    confined: bool
    mode: str = Field(max_length=32)
    network: bool
    limits: dict[Annotated[str, Field(max_length=64)], Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, max_length=32, description="limit name -> value (0: none)"
    )
