""""Clone with one change": a wizard draft holding every value of an existing job (model,
training, federation, requirements, warm start and the very same data shards), so the user
changes one thing and Review shows the diff of the six files against the original."""

from __future__ import annotations

import difflib
import json
import shutil
from dataclasses import dataclass

from resonfl.catalog import list_examples
from resonfl.job import Job as JobSpec
from resonfl_server.backend.models import Job
from resonfl_server.backend.services.experiments import (
    ONE_CHANGE_REASON,
    changes,
    job_requirements,
    settings_of,
)
from resonfl_server.backend.storage import ArtifactStore
from resonfl_server.backend.web import algorithms
from resonfl_server.backend.web.drafts import (
    FEDERATION_FIELDS,
    STEPS,
    WORKFLOWS,
    Draft,
    DraftStore,
    shards_dir,
)
from resonfl_server.backend.web.forms import Raw, model_to_raw, to_text


def clone_job(drafts: DraftStore, store: ArtifactStore, owner_id: int, job: Job) -> Draft:
    """A new draft of `owner_id` with every value of `job`; every step counts as saved."""
    spec = JobSpec.load(store.job_folder(job.id))
    draft = drafts.create(owner_id)
    draft.clone_of = job.id
    folder = drafts.folder(draft.id)
    draft.raw["model"] = _model_raw(spec, job)
    if draft.raw["model"]["source"] == "upload":
        (folder / "model_def.py").write_text(spec.model.source, "utf-8")
        draft.model_upload_name = "model_def.py"
    draft.raw["training"] = model_to_raw(spec.training)
    draft.raw["federation"] = _federation_raw(spec)
    dataset = spec.federation.dataset  # data the sites hold: the clone uses it again
    draft.raw["data"] = {
        "mode": "sites" if dataset else "upload", "dataset": dataset or "",
        "split": "iid", "alpha": "0.5", "seed": "0",
        "requirements": "\n".join(spec.requirements),
    }  # fmt: skip
    for site, path in spec.shards.items():
        shutil.copytree(path, shards_dir(drafts, draft) / site)
        draft.shards[site] = f"the data of job #{job.id}"
    if spec.model_checkpoint is not None:
        name = spec.checkpoint_name() or spec.model_checkpoint.name
        shutil.copyfile(spec.model_checkpoint, folder / name)
        draft.checkpoint_name = draft.checkpoint_original = name
    draft.saved = [s for s in STEPS if s != "review"]
    drafts.save(draft)
    return draft


def _model_raw(spec: JobSpec, job: Job) -> Raw:
    model = spec.model
    # an unchanged catalog model stays "example" (so the Data step can still generate)
    example = next((e.name for e in list_examples() if e.model_config() == model), None)
    return {
        "name": f"{job.name} · clone of #{job.id}"[:200],
        "source": "example" if example else "upload",
        "example": example or "",
        "class_name": model.class_name,
        "train_fn": model.train_fn,
        "eval_fn": model.eval_fn,
        "model_args": json.dumps(model.args),
    }


def _federation_raw(spec: JobSpec) -> Raw:
    fed = spec.federation
    workflow = next((k for k, (_, path) in WORKFLOWS.items() if path == fed.workflow_path), "")
    raw: Raw = {k: to_text(getattr(fed, k)) for k in FEDERATION_FIELDS}
    raw.update(
        sites=",".join(fed.sites),
        workflow=workflow or "scatter_and_gather",
        cyclic_order=",".join(fed.sites) if workflow == "cyclic" else "",
        sites_per_round=to_text(fed.workflow_args.get("sites_per_round")),
        **algorithms.defaults(),
    )
    algorithm = algorithms.by_path(fed.aggregator_path)
    if algorithm is not None:
        raw["aggregator"] = algorithm.key
        for name, value in fed.aggregator_args.items():
            raw[f"{algorithm.prefix}{name}"] = to_text(value)
    else:
        raw["aggregator"] = next(iter(algorithms.algorithms()))
    return raw


@dataclass
class CloneReview:
    """What Review shows for a clone: the original, the settings changed, each changed
    file's diff, and the playbook's warning when more than one setting changed."""

    original: Job
    changes: list[tuple[str, str, str]]
    diffs: list[tuple[str, list[tuple[str, str]]]]  # file -> [(css class, line)]
    warning: str | None


def review(
    store: ArtifactStore, draft: Draft, original: Job, job: JobSpec, files: dict[str, str]
) -> CloneReview:
    before = settings_of(original.files, job_requirements(store, original))
    after = settings_of(files, job.requirements)
    found = changes(before, after)
    copied = f"the data of job #{original.id}"
    if any(how != copied for how in draft.shards.values()):
        found.append(("data shards", copied, "new data"))
    diffs = []
    for name, text in files.items():
        old = original.files.get(name, "")
        if old == text:
            continue
        lines = difflib.unified_diff(
            old.splitlines(), text.splitlines(), f"job #{original.id}/{name}", f"clone/{name}",
            lineterm="", n=2,
        )  # fmt: skip
        diffs.append((name, [(_css(line), line) for line in lines]))
    warning = None
    if len(found) > 1:
        warning = f"{len(found)} settings changed. {ONE_CHANGE_REASON}"
    return CloneReview(original, found, diffs, warning)


def _css(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "diff-file"
    if line.startswith("@@"):
        return "diff-hunk"
    return {"+": "diff-add", "-": "diff-del"}.get(line[:1], "")
