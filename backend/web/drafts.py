"""Wizard drafts: what a user entered in each step, kept server-side so back and forth never
loses input. A draft is a folder data_dir/web/drafts/<id>/ holding draft.json (the text of
every step's form, as typed) and the files uploaded or generated so far (model_def.py, the
warm-start checkpoint, shards/<site>/). The signed session cookie names the user's current
draft; the folder records its owner, so a draft id alone reaches nothing.

`build_job` turns a complete draft into the SDK's `resonfl.job.Job` — the very object the SDK
renders — so the Review step shows, and Submit sends, the SDK's own bytes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from resonfl.catalog import ExampleInfo, UnknownExampleError, get_example, list_examples
from resonfl.config import FederationConfig, ModelConfig, TrainingConfig
from resonfl.job import Job as JobSpec
from resonfl.job import JobValidationError, check_model_source

from resonfl_server.backend.web import algorithms
from resonfl_server.backend.web.forms import (
    Errors,
    FieldSpec,
    Raw,
    default_raw,
    fields_of,
    model_to_raw,
    parse_training,
    validation_errors,
)

STEPS = ("model", "training", "federation", "data", "review")
STEP_TITLES = {
    "model": "Model",
    "training": "Training",
    "federation": "Federation",
    "data": "Data",
    "review": "Review",
}
_ID_RE = re.compile(r"^[0-9a-f]{16}$")

WORKFLOWS = {
    "scatter_and_gather": (
        "Scatter and Gather (every site, or a random draw, every round)",
        "resonfl.fl.workflows.ScatterAndGather",
    ),
    "cyclic": ("Cyclic (one site per round, in turn)", "resonfl.fl.workflows.Cyclic"),
}
CYCLIC_AGGREGATOR = "resonfl.fl.cyclic.CyclicAggregator"
# FederationConfig fields the Federation step shows as generated inputs
FEDERATION_FIELDS = ("num_rounds", "min_clients", "round_timeout_s", "gpus_per_site")


class StepInvalid(Exception):
    """A step's saved input does not validate (or was never saved)."""

    def __init__(self, step: str, errors: Errors) -> None:
        super().__init__(f"{step}: {errors}")
        self.step, self.errors = step, errors


class Draft(BaseModel):
    id: str
    owner_id: int
    created: float = Field(default_factory=time.time)
    raw: dict[str, Raw] = Field(default_factory=dict)
    saved: list[str] = Field(default_factory=list)
    model_upload_name: str | None = None
    checkpoint_name: str | None = None  # "checkpoint.pt" / "checkpoint.safetensors" in the folder
    checkpoint_original: str | None = None
    shards: dict[str, str] = Field(default_factory=dict)  # site -> how it was made
    job_id: int | None = None
    clone_of: int | None = None  # "Clone with one change": Review diffs against this job


@dataclass
class DraftStore:
    root: Path

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> DraftStore:
        return cls(Path(data_dir).resolve() / "web" / "drafts")

    def folder(self, draft_id: str) -> Path:
        if not _ID_RE.fullmatch(draft_id):
            raise KeyError(draft_id)
        return self.root / draft_id

    def create(self, owner_id: int) -> Draft:
        draft = Draft(id=secrets.token_hex(8), owner_id=owner_id)
        self.folder(draft.id).mkdir(parents=True)
        self.save(draft)
        return draft

    def get(self, draft_id: str, owner_id: int) -> Draft | None:
        try:
            path = self.folder(draft_id) / "draft.json"
        except KeyError:
            return None
        if not path.is_file():
            return None
        draft = Draft.model_validate_json(path.read_text("utf-8"))
        return draft if draft.owner_id == owner_id else None

    def save(self, draft: Draft) -> None:
        path = self.folder(draft.id) / "draft.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(draft.model_dump_json(indent=1), encoding="utf-8")
        os.replace(tmp, path)

    def delete(self, draft_id: str) -> None:
        shutil.rmtree(self.folder(draft_id), ignore_errors=True)


# ------------------------------------------------------------------------- model step
def example_or_none(raw: Raw) -> ExampleInfo | None:
    if raw.get("source", "example") != "example":
        return None
    try:
        return get_example(raw.get("example") or "digits")
    except UnknownExampleError:
        return None


def default_model_raw() -> Raw:
    names = [e.name for e in list_examples()]
    first = "digits" if "digits" in names else (names[0] if names else "")
    return {
        "name": f"{first}-fedavg" if first else "",
        "source": "example",
        "example": first,
        "class_name": "Net",
        "train_fn": "fl_train_model",
        "eval_fn": "fl_evaluate_model",
        "model_args": "{}",
    }


def model_config(store: DraftStore, draft: Draft) -> tuple[ModelConfig | None, Errors]:
    """The Model step's ModelConfig, checked like the SDK checks it (class and train fn exist)."""
    raw = draft.raw.get("model", default_model_raw())
    errors: Errors = {}
    if not raw.get("name"):
        errors["name"] = "give the job a name"
    elif raw["name"].strip() != raw["name"] or not raw["name"].isprintable():
        errors["name"] = "printable, with no leading or trailing spaces"
    if raw.get("source") == "upload":
        path = store.folder(draft.id) / "model_def.py"
        if not path.is_file():
            errors["model_def"] = "upload a model_def.py (or pick an example)"
            return None, errors
        try:
            args = json.loads(raw.get("model_args") or "{}")
            if not isinstance(args, dict):
                raise ValueError("must be a JSON object")
        except ValueError as exc:
            errors["model_args"] = f"constructor arguments must be a JSON object ({exc})"
            return None, errors
        data: dict[str, Any] = {
            "source": path.read_text("utf-8", errors="replace"),
            "class_name": raw.get("class_name") or "Net",
            "train_fn": raw.get("train_fn") or "fl_train_model",
            "eval_fn": raw.get("eval_fn") or "fl_evaluate_model",
            "args": args,
        }
        try:
            model = ModelConfig(**data)
        except ValidationError as exc:
            errors.update(validation_errors(exc, "model_def"))
            return None, errors
    else:
        info = example_or_none(raw)
        if info is None:
            errors["example"] = f"no catalog example {raw.get('example')!r}"
            return None, errors
        model = info.model_config()
    try:
        check_model_source(model)
    except JobValidationError as exc:
        field = exc.field if exc.field in ("class_name", "train_fn") else "model_def"
        errors[field] = exc.message if field != "model_def" else f"{exc.field}: {exc.message}"
    return (None if errors else model), errors


# ------------------------------------------------------------------------- training step
def training_defaults(draft: Draft) -> TrainingConfig:
    info = example_or_none(draft.raw.get("model", default_model_raw()))
    return info.training_config() if info is not None else TrainingConfig()


def training_raw(draft: Draft) -> Raw:
    return draft.raw.get("training") or model_to_raw(training_defaults(draft))


# ------------------------------------------------------------------------- federation step
def federation_fields() -> list[FieldSpec]:
    """The FederationConfig inputs (rounds, minimum sites, timeout, GPUs), generated."""
    return [f for f in fields_of(FederationConfig) if f.name in FEDERATION_FIELDS]


def federation_defaults(draft: Draft, registered: list[str]) -> Raw:
    info = example_or_none(draft.raw.get("model", default_model_raw()))
    config = default_raw(FederationConfig)
    rounds = (info.federation.get("num_rounds") if info else None) or config["num_rounds"]
    return {
        **{k: config[k] for k in FEDERATION_FIELDS},
        "num_rounds": str(rounds),
        "sites": ",".join(registered[:2]),
        "workflow": "scatter_and_gather",
        "cyclic_order": "",
        "sites_per_round": "",
        "aggregator": next(iter(algorithms.algorithms())),
        **algorithms.defaults(),
    }


def federation_raw(draft: Draft, registered: list[str]) -> Raw:
    return {**federation_defaults(draft, registered), **draft.raw.get("federation", {})}


def federation_form_keys() -> list[str]:
    """Every input name the Federation step posts, besides the site checkboxes."""
    return [
        *FEDERATION_FIELDS,
        "workflow",
        "cyclic_order",
        "sites_per_round",
        "aggregator",
        *algorithms.form_keys(),
    ]


def selected_sites(raw: Raw) -> list[str]:
    return [s for s in raw.get("sites", "").split(",") if s]


def federation_config(raw: Raw, registered: list[str]) -> tuple[FederationConfig | None, Errors]:
    errors: Errors = {}
    sites = selected_sites(raw)
    unknown = [s for s in sites if s not in registered]
    if not sites:
        errors["sites"] = "choose at least one registered site"
    elif unknown:
        errors["sites"] = f"not registered: {', '.join(unknown)}"
    workflow = raw.get("workflow", "scatter_and_gather")
    if workflow not in WORKFLOWS:
        errors["workflow"] = "choose a workflow from the list"
        return None, errors
    if workflow == "cyclic" and raw.get("cyclic_order"):
        order = [s.strip() for s in raw["cyclic_order"].split(",") if s.strip()]
        if sorted(order) != sorted(sites):
            errors["cyclic_order"] = "list each chosen site exactly once, e.g. " + ", ".join(sites)
        else:
            sites = order
    workflow_args: dict[str, Any] = {}
    per_round = (raw.get("sites_per_round") or "").strip()
    if per_round and workflow == "scatter_and_gather":
        if not per_round.isdigit() or not 1 <= int(per_round) <= max(len(sites), 1):
            errors["sites_per_round"] = f"a whole number from 1 to the {len(sites)} chosen sites"
        else:
            workflow_args["sites_per_round"] = int(per_round)
    agg_args: dict[str, Any] | None = {}
    if workflow == "cyclic":
        agg_path = CYCLIC_AGGREGATOR
    elif (algorithm := algorithms.algorithms().get(raw.get("aggregator", ""))) is None:
        errors["aggregator"] = "choose an aggregator from the list"
        return None, errors
    else:
        agg_path = algorithm.path
        agg_args, arg_errors = algorithm.parse(raw, sites)
        errors.update(arg_errors)
    if errors:
        return None, errors
    data: dict[str, Any] = {name: raw.get(name) or None for name in FEDERATION_FIELDS} | {
        "sites": sites,
        "workflow_path": WORKFLOWS[workflow][1],
        "workflow_args": workflow_args or None,
        "aggregator_path": agg_path,
        "aggregator_args": agg_args,
    }
    data = {k: v for k, v in data.items() if v is not None}
    try:
        fed = FederationConfig.model_validate(data)
    except ValidationError as exc:
        return None, validation_errors(exc, "min_clients")
    return fed, {}


# ------------------------------------------------------------------------- data step
DATA_MODES = ("sites", "generate", "upload")
# site -> dataset name -> what its worker reported (schemas.sites.SiteDatasetPublic)
Holdings = dict[str, dict[str, dict[str, Any]]]


def data_raw(draft: Draft) -> Raw:
    """The Data step's text. "Data at the sites" is the default unless the example ships data
    to generate shards from; an uploaded model_def.py cannot generate (whatever was chosen)."""
    info = example_or_none(draft.raw.get("model", default_model_raw()))
    at_sites = str(info.dataset.get("at_sites") or "") if info else ""
    generates = info is not None and not at_sites
    defaults = {
        "mode": "generate" if generates else "sites",
        "dataset": at_sites,
        "split": "iid",
        "alpha": "0.5",
        "seed": "0",
        "requirements": "",
    }
    raw = {**defaults, **draft.raw.get("data", {})}
    if raw["mode"] not in DATA_MODES or (raw["mode"] == "generate" and not generates):
        raw["mode"] = "sites"
    return raw


def dataset_names(holdings: Holdings) -> list[str]:
    return sorted({name for held in holdings.values() for name in held})


def holders(holdings: Holdings, dataset: str) -> dict[str, dict[str, Any]]:
    """The sites that hold `dataset`, with what each reported (samples, labels)."""
    return {site: held[dataset] for site, held in holdings.items() if dataset in held}


def sites_at_data(draft: Draft, registered: list[str], holdings: Holdings, dataset: str) -> list[str]:
    """The Federation step's sites that hold `dataset` (the others are unticked); when none
    of them does, every site that holds it."""
    have = holders(holdings, dataset)
    chosen = [s for s in selected_sites(federation_raw(draft, registered)) if s in have]
    return chosen or sorted(have)


def shards_dir(store: DraftStore, draft: Draft) -> Path:
    return store.folder(draft.id) / "shards"


def data_errors(
    store: DraftStore, draft: Draft, sites: list[str], holdings: Holdings | None = None
) -> Errors:
    errors: Errors = {}
    raw = data_raw(draft)
    if raw["mode"] == "sites":
        dataset, have = raw["dataset"], holders(holdings or {}, raw["dataset"])
        lacking = [s for s in sites if s not in have]
        if not dataset:
            errors["dataset"] = "choose a dataset that the sites hold"
        elif not have:
            errors["dataset"] = f"no registered site reports a dataset {dataset!r}"
        elif lacking:
            errors["dataset"] = f"{', '.join(lacking)} do(es) not hold {dataset!r}: untick it"
    else:
        missing = [s for s in sites if not (shards_dir(store, draft) / s).is_dir()]
        if missing:
            errors["shards"] = f"no data shard yet for: {', '.join(missing)}"
    try:
        requirements(draft)
    except ValueError as exc:
        errors["requirements"] = str(exc)
    return errors


def requirements(draft: Draft) -> list[str]:
    lines = []
    for number, line in enumerate(data_raw(draft).get("requirements", "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if any(c in line for c in ";&|`$") and "; " not in line:
            raise ValueError(f"line {number} ({line!r}) does not look like a requirement")
        lines.append(line)
    return lines


# ------------------------------------------------------------------------- whole job
def build_job(
    store: DraftStore, draft: Draft, registered: list[str], holdings: Holdings | None = None
) -> JobSpec:
    """The SDK Job for this draft; StepInvalid names the first step that does not validate."""
    model, errors = model_config(store, draft)
    if model is None or "model" not in draft.saved:
        raise StepInvalid("model", errors or {"_": "save this step first"})
    training, errors = parse_training(training_raw(draft))
    if training is None or "training" not in draft.saved:
        raise StepInvalid("training", errors or {"_": "save this step first"})
    fed, errors = federation_config(federation_raw(draft, registered), registered)
    if fed is None or "federation" not in draft.saved:
        raise StepInvalid("federation", errors or {"_": "save this step first"})
    errors = data_errors(store, draft, fed.sites, holdings)
    if errors or "data" not in draft.saved:
        raise StepInvalid("data", errors or {"_": "save this step first"})
    at_sites = data_raw(draft)["mode"] == "sites"
    if at_sites:
        fed = FederationConfig.model_validate({**fed.model_dump(), "dataset": data_raw(draft)["dataset"]})
    checkpoint = None
    if draft.checkpoint_name:
        checkpoint = store.folder(draft.id) / draft.checkpoint_name
    job = JobSpec(
        name=draft.raw["model"]["name"],
        model=model,
        training=training,
        federation=fed,
        model_checkpoint=checkpoint,
        requirements=requirements(draft),
        shards={} if at_sites else {site: shards_dir(store, draft) / site for site in fed.sites},
    )
    try:
        job.validate()
    except JobValidationError as exc:
        step = "federation" if exc.file.startswith("config_fed_server") else "model"
        raise StepInvalid(step, {"_": str(exc)}) from None
    return job
