"""Experiments across jobs: what settings two jobs differ in, and their curves side by side.

`settings_of` flattens a job's six files into ``setting -> value`` (training.lr,
federation.num_rounds, aggregator, model.width, model_def.py ...), leaving out names and
plumbing (component ids, paths of the fixed scripts), so "what changed" is a dict
comparison. The same function serves the wizard's "Clone with one change" (draft vs
original) and the compare page (2+ jobs).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from resonfl.job import CLIENT_CONFIG, META, REQUIREMENTS, SERVER_CONFIG
from resonfl_server.backend.models import Job, User
from resonfl_server.backend.services.errors import InvalidSubmission
from resonfl_server.backend.services.jobs import get_job_for
from resonfl_server.backend.storage import ArtifactStore

# The tuning playbook's reason (seed approach.txt, "Empirical Lessons"), shown when a clone
# changes more than one setting.
ONE_CHANGE_REASON = (
    "When tuning a federated port, change one thing at a time. Stacked deviations (e.g. EMA + "
    "label smoothing + 10 rounds in one run) regressed by ~2 pp on the reference job and the "
    "root cause could only be isolated by reverting and re-running each component alone."
)
_PLUMBING = {"train_task_name", "persistor_id", "shareable_generator_id", "aggregator_id"}
# metrics compared: (round metric key, label, higher is better)
METRICS = (
    ("global_top1", "global top-1", True),
    ("global_val_loss", "global val loss", False),
    ("train_loss", "train loss", False),
)
MAX_COMPARED = 8


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def settings_of(files: dict[str, str], requirements: list[str] | None = None) -> dict[str, str]:
    """A job's settings as flat text, from its rendered files (name and plumbing left out)."""
    out: dict[str, str] = {}
    client = json.loads(files.get(CLIENT_CONFIG) or "{}")
    server = json.loads(files.get(SERVER_CONFIG) or "{}")
    meta = json.loads(files.get(META) or "{}")
    for executor in client.get("executors", [])[:1]:
        for key, value in (executor.get("executor", {}).get("args") or {}).items():
            if key == "extra" and isinstance(value, dict):
                for k, v in value.items():
                    out[f"training.extra.{k}"] = _text(v)
            else:
                out[f"training.{key}"] = _text(value)
        for key, value in (executor.get("executor", {}).get("task_args") or {}).items():
            out[f"task_args.{key}"] = _text(value)
    for comp in client.get("components", []):
        if comp.get("id") == "model":
            out["model.class"] = str(comp.get("path", "")).removeprefix("model_def.")
            for key, value in (comp.get("args") or {}).items():
                out[f"model.{key}"] = _text(value)
    for key in ("train_fn", "eval_fn"):
        if key in client:
            out[f"model.{key}"] = _text(client[key])
    for comp in server.get("components", []):
        if comp.get("id") == "aggregator":
            out["aggregator"] = str(comp.get("path", ""))
            for key, value in (comp.get("args") or {}).items():
                out[f"aggregator.{key}"] = _text(value)
        if comp.get("id") == "persistor":
            ckpt = (comp.get("args") or {}).get("model_checkpoint")
            out["model_checkpoint"] = _text(ckpt)
    for flow in server.get("workflows", [])[:1]:
        out["workflow"] = str(flow.get("path", ""))
        for key, value in (flow.get("args") or {}).items():
            if key not in _PLUMBING:
                out[f"federation.{key}"] = _text(value)
    out["sites"] = ", ".join(meta.get("sites") or [])
    gpus = {v.get("num_gpus") for v in (meta.get("resource_spec") or {}).values()}
    out["federation.gpus_per_site"] = _text(sorted(g for g in gpus if g is not None))
    source = files.get("model_def.py", "")
    out["model_def.py"] = "sha256 " + hashlib.sha256(source.encode()).hexdigest()[:12]
    out[REQUIREMENTS] = "; ".join(requirements or []) or "(none)"
    return out


def changes(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str, str]]:
    """(setting, before, after) for each setting that differs."""
    keys = sorted(set(before) | set(after))
    return [
        (k, before.get(k, "—"), after.get(k, "—")) for k in keys if before.get(k) != after.get(k)
    ]


def job_requirements(store: ArtifactStore, job: Job) -> list[str]:
    path = store.job_folder(job.id) / REQUIREMENTS
    if not path.is_file():
        return []
    lines = path.read_text("utf-8", errors="replace").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


@dataclass
class MetricCompare:
    key: str
    label: str
    higher_is_better: bool
    curves: dict[int, list[tuple[int, float]]]  # job id -> (round, value)
    final: dict[int, float | None]  # job id -> value at its last round
    diff: dict[int, float | None]  # job id -> final - the first job's final


@dataclass
class Comparison:
    jobs: list[Job]
    differing: list[tuple[str, list[str]]]  # setting, value per job (in order)
    same: int  # how many settings are equal in all
    metrics: list[MetricCompare] = field(default_factory=list)


def parse_ids(text: str) -> list[int]:
    """ "3,5" or "3 5" -> [3, 5]; a 422 naming the field when it is not 2..8 job ids."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        raise InvalidSubmission("jobs", "", f"job ids are whole numbers: {text!r}") from None
    ids = list(dict.fromkeys(ids))
    if not 2 <= len(ids) <= MAX_COMPARED:
        raise InvalidSubmission("jobs", "", f"compare 2 to {MAX_COMPARED} distinct jobs, got {len(ids)}")
    return ids


def compare(session: Session, store: ArtifactStore, user: User, ids: list[int]) -> Comparison:
    jobs = [get_job_for(session, user, i) for i in ids]
    settings = [settings_of(j.files, job_requirements(store, j)) for j in jobs]
    keys = sorted(set().union(*settings))
    differing = [
        (k, [s.get(k, "—") for s in settings])
        for k in keys
        if len({s.get(k, "—") for s in settings}) > 1
    ]
    out = Comparison(jobs, differing, len(keys) - len(differing))
    for key, label, higher in METRICS:
        curves = {j.id: _points(j, key) for j in jobs}
        final = {j.id: (curves[j.id][-1][1] if curves[j.id] else None) for j in jobs}
        base = final[jobs[0].id]
        diff: dict[int, float | None] = {}
        for j in jobs:
            value = final[j.id]
            diff[j.id] = None if value is None or base is None else value - base
        out.metrics.append(MetricCompare(key, label, higher, curves, final, diff))
    return out


def _points(job: Job, key: str) -> list[tuple[int, float]]:
    out = []
    for rnd in job.rounds:
        value = (rnd.metrics or {}).get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out.append((rnd.number, float(value)))
    return sorted(out)
