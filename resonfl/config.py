"""The SDK's typed job settings: what a data scientist sets, validated at the edge.

`TrainingConfig` becomes `executor.args` in config_fed_client.json, `ModelConfig` names the
model class and train function in model_def.py, `FederationConfig` becomes the workflow and
aggregator of config_fed_server.json. Field names are the wire format: renaming one is a
format change.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SITE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DATASET_NAME_RE = SITE_NAME_RE  # a site's registered dataset: same alphabet as a site name
CLASS_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingConfig(_Strict):
    """The centralized recipe's knobs, ported literally, plus the FL-specific fixes.

    The defaults are the platform's recommended baseline: a continuous LR schedule across
    rounds and Adam/AdamW state persisted per site (the seed's two client-side fixes).
    """

    optimizer: Literal["adamw", "adam", "sgd"] = Field(
        "adamw", description="the local optimizer env.make_optimizer builds"
    )
    lr: float = Field(1e-3, gt=0, le=10, description="peak learning rate of the local optimizer")
    weight_decay: float = Field(0.0, ge=0, description="the optimizer's weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW only")
    batch_size: int = Field(32, ge=1, le=65536, description="training batch size")
    eval_batch_size: int = Field(256, ge=1, le=65536, description="batch size of env.evaluate")
    loader_workers: int = Field(
        0,
        ge=0,
        le=32,
        description="DataLoader worker processes of env.fit / env.evaluate (0: load in the "
        "job process; more for datasets read lazily from files)",
    )
    local_steps: int | None = Field(20, ge=1, description="optimizer steps per round")
    local_epochs: float | None = Field(None, gt=0, description="used when local_steps is null")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "cosine", description="shape of the LR after warmup (over the whole run when continuous)"
    )
    warmup_steps: int = Field(0, ge=0, description="in global steps (across rounds)")
    min_lr_ratio: float = Field(
        0.0, ge=0, le=1, description="the schedule's last LR as a share of lr"
    )
    continuous_schedule: bool = Field(
        True, description="position = current_round * steps_per_round + local_step"
    )
    persist_optimizer_state: bool = Field(
        True, description="save/restore STATE_DIR/optimizer_state.pt across rounds"
    )
    amp: bool = Field(False, description="float16 autocast in env.fit (CUDA only)")
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm in env.fit")
    seed: int = Field(0, description="model init and data order; each site and round derive theirs")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="off when null")
    ema_persist: bool = Field(
        True,
        description=(
            "keep the EMA decay schedule (its step count) across rounds in STATE_DIR; the "
            "average itself restarts from the received global model every round"
        ),
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="training loss only; evaluation stays hard-label"
    )
    tta_hflip: bool = Field(False, description="average logits with the h-flipped input at eval")
    extra: dict[str, Any] = Field(default_factory=dict, description="exported as env variables")

    @field_validator("extra")
    @classmethod
    def _extra_keys_are_env_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"extra key {key!r} is not a valid environment variable name")
            if not isinstance(item, str | int | float | bool):
                raise ValueError(f"extra[{key!r}] must be a string, number or boolean")
        return value

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainingConfig:
        if self.local_steps is None and self.local_epochs is None:
            raise ValueError("set local_steps or local_epochs")
        return self


class ModelConfig(_Strict):
    """Which model class and train function model_def.py provides, and how to build it."""

    source: str = Field(description="the text of model_def.py")
    class_name: str = Field("Net", description="the model class in model_def.py")
    args: dict[str, Any] = Field(default_factory=dict, description="constructor kwargs (JSON)")
    train_fn: str = Field(
        "fl_train_model", description="train function: (model, env, out_dir, logger) -> result"
    )
    eval_fn: str = Field(
        "fl_evaluate_model",
        description="optional eval function: (model, env, logger) -> metrics; resonfl evaluate",
    )

    @field_validator("class_name", "train_fn", "eval_fn")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENT_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a Python identifier")
        return value


MIN_CLIENTS_HELP = "results needed to aggregate a round; blank (None) = every site"


def min_clients_for(min_clients: int | None, num_sites: int) -> int:
    """How many results close a round: `min_clients`, where None means every site (the one
    place that says so)."""
    return num_sites if min_clients is None else min_clients


DEFAULT_WORKFLOW = "resonfl.fl.workflows.ScatterAndGather"
DEFAULT_AGGREGATOR = "resonfl.fl.fedavg.FedAvg"


class FederationConfig(_Strict):
    """How rounds run: how many, which sites, and the workflow and aggregator class paths."""

    num_rounds: int = Field(
        5, ge=1, le=10000, description="how many times the sites train and the server aggregates"
    )
    min_clients: int | None = Field(None, ge=1, description=MIN_CLIENTS_HELP)
    sites: list[str] = Field(
        default_factory=lambda: ["site-1", "site-2"],
        min_length=1,
        description="the sites that train (registered on the server; unique names)",
    )
    workflow_path: str = Field(DEFAULT_WORKFLOW, description="who trains each round (class path)")
    workflow_args: dict[str, Any] = Field(
        default_factory=dict, description="the workflow's own Args (besides rounds and timeout)"
    )
    aggregator_path: str = Field(
        DEFAULT_AGGREGATOR, description="how updates become the next global model (class path)"
    )
    aggregator_args: dict[str, Any] = Field(
        default_factory=dict, description="the aggregator's Args (e.g. FedProx's mu)"
    )
    round_timeout_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 24 * 3600,
        description="after this a round aggregates what it has (min sites permitting); "
        "at most a week",
    )
    gpus_per_site: int = Field(0, ge=0, le=64, description="resource spec in meta.json")
    dataset: str | None = Field(
        None,
        description="data at the sites: the dataset (registered by each site's worker with "
        "--dataset NAME=/folder) that every site trains on; DATA_ROOT is its folder, read-only",
    )

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str | None) -> str | None:
        if value is not None and not DATASET_NAME_RE.fullmatch(value):
            raise ValueError(f"dataset name {value!r} must be 1-63 letters, digits, '.', '_', '-'")
        return value

    @field_validator("sites")
    @classmethod
    def _site_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not SITE_NAME_RE.fullmatch(name):
                raise ValueError(f"site name {name!r} must be 1-63 letters, digits, '.', '_', '-'")
        if len(set(value)) != len(value):
            raise ValueError("site names must be unique")
        return value

    @field_validator("workflow_path", "aggregator_path")
    @classmethod
    def _class_path(cls, value: str) -> str:
        if not CLASS_PATH_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a dotted class path like package.module.Class")
        return value

    @model_validator(mode="after")
    def _min_clients_fits(self) -> FederationConfig:
        if self.min_clients is not None and self.min_clients > len(self.sites):
            raise ValueError(
                f"min_clients={self.min_clients} exceeds the number of sites ({len(self.sites)})"
            )
        return self

    @property
    def effective_min_clients(self) -> int:
        return min_clients_for(self.min_clients, len(self.sites))
