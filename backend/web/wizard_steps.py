"""The wizard's steps, one handler each: what a step stores from its form, how it validates,
and what its page shows. The routes (`resonfl_server.backend.web.routes.wizard`) look the handler up by the
step's name; files go through `resonfl_server.backend.services.draft_files`.

A new step is one class here (save / errors / context), its key in `drafts.STEPS`, and its
template `pages/wizard_<key>.html`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from resonfl_server.backend.models import Site
from resonfl_server.backend.services import accounts, draft_files
from resonfl_server.backend.services.errors import InvalidSubmission, PayloadTooLarge
from resonfl_server.backend.web import algorithms, drafts
from resonfl_server.backend.web.drafts import Draft, DraftStore
from resonfl_server.backend.web.forms import (
    Errors,
    FieldSpec,
    fields_of,
    form_to_raw,
    parse_training,
)
from resonfl_server.backend.web.guidance import Note, federation_notes, training_notes
from resonfl.catalog import list_examples
from resonfl.config import SITE_NAME_RE, TrainingConfig


@dataclass
class StepContext:
    """One request's view of a draft: where its files live and which sites exist."""

    request: Request
    session: Session
    store: DraftStore
    draft: Draft

    @cached_property
    def sites(self) -> list[Site]:
        return accounts.list_sites(self.session)

    @cached_property
    def registered(self) -> list[str]:
        return [site.name for site in self.sites]

    @cached_property
    def holdings(self) -> drafts.Holdings:
        return holdings_of(self.sites)

    def chosen_sites(self) -> list[str]:
        """The Federation step's sites when it validates, else none."""
        fed, _ = drafts.federation_config(
            drafts.federation_raw(self.draft, self.registered), self.registered
        )
        return fed.sites if fed is not None else []


class Step(Protocol):
    key: ClassVar[str]

    def save(self, ctx: StepContext, form: FormData, nav: str) -> Errors:
        """Store what was posted (even when invalid); return the errors."""

    def errors(self, ctx: StepContext) -> Errors:
        """Validate what is stored."""

    def context(self, ctx: StepContext) -> dict[str, Any]:
        """The step page's template variables."""


# ----------------------------------------------------------------------------- model
class ModelStep:
    key = "model"
    KEYS = ("name", "source", "example", "class_name", "train_fn", "eval_fn", "model_args")

    def save(self, ctx: StepContext, form: FormData, nav: str) -> Errors:
        draft = ctx.draft
        previous = draft.raw.get("model", drafts.default_model_raw())
        raw = {k: str(form.get(k, previous.get(k, ""))).strip() for k in self.KEYS}
        if raw["source"] not in ("example", "upload"):
            raw["source"] = "example"
        draft.raw["model"] = raw
        folder = ctx.store.folder(draft.id)
        errors: Errors = {}
        upload = form.get("model_def")
        if isinstance(upload, UploadFile) and upload.filename:
            try:
                draft_files.save_model_def(folder, upload.file, upload.filename)
                draft.model_upload_name = upload.filename
                raw["source"] = "upload"
            except InvalidSubmission as exc:
                errors["model_def"] = exc.message
        if form.get("remove_checkpoint") == "on" and draft.checkpoint_name:
            draft_files.remove_checkpoint(folder, draft.checkpoint_name)
            draft.checkpoint_name = draft.checkpoint_original = None
        ckpt = form.get("checkpoint")
        if isinstance(ckpt, UploadFile) and ckpt.filename:
            try:
                name = draft_files.save_checkpoint(
                    folder, ckpt.file, ckpt.filename, draft.checkpoint_name
                )
                draft.checkpoint_name, draft.checkpoint_original = name, ckpt.filename
            except InvalidSubmission as exc:
                errors["checkpoint"] = exc.detail
        return {**self.errors(ctx), **errors}

    def errors(self, ctx: StepContext) -> Errors:
        return drafts.model_config(ctx.store, ctx.draft)[1]

    def context(self, ctx: StepContext) -> dict[str, Any]:
        return {
            "raw": ctx.draft.raw.get("model", drafts.default_model_raw()),
            "examples": list_examples(),
        }


# ----------------------------------------------------------------------------- training
# The TrainingConfig inputs, grouped as the playbook thinks about them.
TRAINING_GROUPS = {
    "Optimizer": ["optimizer", "lr", "weight_decay", "momentum", "betas"],
    "Steps and schedule": [
        "batch_size", "eval_batch_size", "local_steps", "local_epochs", "lr_schedule",
        "warmup_steps", "min_lr_ratio", "continuous_schedule", "persist_optimizer_state",
    ],
    "Recipe knobs": ["amp", "grad_clip", "seed", "ema_decay", "ema_persist", "label_smoothing", "tta_hflip"],
    "Environment": ["extra"],
}  # fmt: skip


def training_fields() -> list[tuple[str, list[FieldSpec]]]:
    by_name = {f.name: f for f in fields_of(TrainingConfig)}
    out = [
        (title, [by_name.pop(n) for n in names if n in by_name])
        for title, names in TRAINING_GROUPS.items()
    ]
    if by_name:  # a field added to TrainingConfig later still gets an input
        out.append(("More", list(by_name.values())))
    return out


def training_notes_for(draft: Draft, raw: dict[str, str]) -> list[Note]:
    info = drafts.example_or_none(draft.raw.get("model", drafts.default_model_raw()))
    return training_notes(raw, drafts.training_defaults(draft), info.name if info else None)


class TrainingStep:
    key = "training"

    def save(self, ctx: StepContext, form: FormData, nav: str) -> Errors:
        ctx.draft.raw["training"] = form_to_raw(form, fields_of(TrainingConfig))
        return self.errors(ctx)

    def errors(self, ctx: StepContext) -> Errors:
        return parse_training(drafts.training_raw(ctx.draft))[1]

    def context(self, ctx: StepContext) -> dict[str, Any]:
        draft = ctx.draft
        raw = drafts.training_raw(draft)
        info = drafts.example_or_none(draft.raw.get("model", {}))
        return {
            "raw": raw,
            "fields": training_fields(),
            "notes": training_notes_for(draft, raw),
            "defaults": drafts.training_defaults(draft),
            "example_notes": info.notes if info else {},
        }


# ----------------------------------------------------------------------------- federation
class FederationStep:
    key = "federation"

    def save(self, ctx: StepContext, form: FormData, nav: str) -> Errors:
        # an input left out of the post keeps its default (drafts.federation_raw)
        raw = {k: str(form[k]).strip() for k in drafts.federation_form_keys() if k in form}
        sites = [str(s) for s in form.getlist("sites") if SITE_NAME_RE.fullmatch(str(s))]
        raw["sites"] = ",".join(sites)
        ctx.draft.raw["federation"] = raw
        return self.errors(ctx)

    def errors(self, ctx: StepContext) -> Errors:
        raw = drafts.federation_raw(ctx.draft, ctx.registered)
        return drafts.federation_config(raw, ctx.registered)[1]

    def context(self, ctx: StepContext) -> dict[str, Any]:
        registered = accounts.list_sites(ctx.session)
        raw = drafts.federation_raw(ctx.draft, [s.name for s in registered])
        model, _ = drafts.model_config(ctx.store, ctx.draft)
        timeout = ctx.request.app.state.settings.site_heartbeat_timeout_s
        return {
            "raw": raw,
            "chosen": drafts.selected_sites(raw),
            "sites": [(s, accounts.is_online(s, timeout)) for s in registered],
            "fields": drafts.federation_fields(),
            "workflows": drafts.WORKFLOWS,
            "algorithms": list(algorithms.algorithms().values()),
            "notes": federation_notes(raw, model.source if model else ""),
        }


# ----------------------------------------------------------------------------- data
def holdings_of(sites: list[Site]) -> drafts.Holdings:
    """What each site's worker last reported holding: site -> dataset name -> report."""
    return {s.name: {d["name"]: d for d in (s.datasets or [])} for s in sites}


def dataset_holders_context(ctx: StepContext, dataset: str) -> dict[str, Any]:
    """The "Data at the sites" table: every registered site, whether it holds `dataset`
    (with its counts), ticked when it holds it and the Federation step chose it."""
    have = drafts.holders(ctx.holdings, dataset)
    ticked = set(drafts.sites_at_data(ctx.draft, ctx.registered, ctx.holdings, dataset))
    chosen = drafts.selected_sites(drafts.federation_raw(ctx.draft, ctx.registered))
    timeout = ctx.request.app.state.settings.site_heartbeat_timeout_s
    rows = [
        {
            "name": s.name,
            "online": accounts.is_online(s, timeout),
            "report": have.get(s.name),
            "ticked": s.name in ticked,
            "unticked": s.name in chosen and s.name not in have,
            "approval": bool((s.policy or {}).get("require_approval")),
        }
        for s in ctx.sites
    ]
    return {"dataset": dataset, "holder_rows": rows, "holders_count": len(have)}


class DataStep:
    key = "data"
    KEYS = ("mode", "dataset", "split", "alpha", "seed", "requirements")

    def save(self, ctx: StepContext, form: FormData, nav: str) -> Errors:
        draft = ctx.draft
        raw = {k: str(form.get(k, "")).strip() for k in self.KEYS}
        draft.raw["data"] = raw
        errors: Errors = {}
        upload_file = form.get("requirements_file")
        if isinstance(upload_file, UploadFile) and upload_file.filename:
            raw["requirements"] = (
                upload_file.file.read(256 * 1024).decode("utf-8", errors="replace").strip()
            )
        if raw["mode"] == "sites":
            return self._at_sites(ctx, form, raw)
        sites = ctx.chosen_sites()
        if not sites:
            return {"shards": "choose the sites in the Federation step first"}
        shards = drafts.shards_dir(ctx.store, draft)
        max_bytes = ctx.request.app.state.settings.max_upload_bytes
        for site in sites:
            upload = form.get(f"shard__{site}")
            if isinstance(upload, UploadFile) and upload.filename:
                try:
                    draft_files.extract_shard(shards, site, upload.file, max_bytes)
                    draft.shards[site] = f"uploaded {upload.filename}"
                except (InvalidSubmission, PayloadTooLarge) as exc:
                    errors[f"shard__{site}"] = exc.detail
        if raw["mode"] == "generate" and nav in ("next", "generate"):
            errors.update(self._generate(ctx, raw, sites))
        return errors or drafts.data_errors(ctx.store, draft, sites)

    def _at_sites(self, ctx: StepContext, form: FormData, raw: dict[str, str]) -> Errors:
        """Data at the sites: the job's sites become the ticked sites that hold the dataset
        (a site that does not hold it is unticked, never sent the job)."""
        dataset = raw["dataset"]
        if not dataset:
            return {"dataset": "choose a dataset that the sites hold"}
        have = drafts.holders(ctx.holdings, dataset)
        if not have:
            return {"dataset": f"no registered site reports a dataset {dataset!r}"}
        if form.get("holders_for") == dataset:  # the table shown was this dataset's
            sites = [s for s in map(str, form.getlist("holder")) if s in have]
        else:  # the dataset changed without the table following (no JavaScript)
            sites = drafts.sites_at_data(ctx.draft, ctx.registered, ctx.holdings, dataset)
        if not sites:
            return {"dataset": f"tick at least one site that holds {dataset!r}"}
        federation = ctx.draft.raw.setdefault("federation", {})
        federation["sites"] = ",".join(sites)
        return drafts.data_errors(ctx.store, ctx.draft, sites, ctx.holdings)

    def _generate(self, ctx: StepContext, raw: dict[str, str], sites: list[str]) -> Errors:
        draft = ctx.draft
        info = drafts.example_or_none(draft.raw.get("model", {}))
        if info is None:
            return {
                "mode": "generating shards needs a catalog example (Model step); "
                "upload shards instead"
            }
        if raw["split"] not in ("iid", "dirichlet"):
            return {"split": "choose IID or Dirichlet"}
        try:
            alpha = float(raw["alpha"] or "0.5")
            if alpha <= 0:
                raise ValueError
        except ValueError:
            return {"alpha": "a number greater than 0 (smaller = more skewed labels per site)"}
        try:
            seed = int(raw["seed"] or "0")
        except ValueError:
            return {"seed": "a whole number"}
        how = (
            f"generated from {info.name}: {raw['split']}"
            + (f" (alpha {alpha:g})" if raw["split"] == "dirichlet" else "")
            + f", seed {seed}"
        )
        shards = drafts.shards_dir(ctx.store, draft)
        if all(draft.shards.get(s) == how and (shards / s).is_dir() for s in sites):
            return {}
        try:
            draft_files.generate_shards(
                shards, ctx.store.folder(draft.id), info.name, sites,
                raw["split"], alpha, seed,  # type: ignore[arg-type]
            )  # fmt: skip
        except ValueError as exc:
            return {"split": str(exc)}
        for site in sites:
            draft.shards[site] = how
        return {}

    def errors(self, ctx: StepContext) -> Errors:
        raw = drafts.federation_raw(ctx.draft, ctx.registered)
        fed, _ = drafts.federation_config(raw, ctx.registered)
        sites = fed.sites if fed is not None else drafts.selected_sites(raw)
        return drafts.data_errors(ctx.store, ctx.draft, sites, ctx.holdings)

    def context(self, ctx: StepContext) -> dict[str, Any]:
        draft = ctx.draft
        shards = drafts.shards_dir(ctx.store, draft)
        raw = drafts.data_raw(draft)
        names = drafts.dataset_names(ctx.holdings)
        dataset = raw["dataset"] or (names[0] if names else "")
        return {
            **dataset_holders_context(ctx, dataset),
            "datasets": [(n, len(drafts.holders(ctx.holdings, n))) for n in names],
            "raw": raw,
            "sites": [
                (s, draft.shards.get(s) if (shards / s).is_dir() else None)
                for s in ctx.chosen_sites()
            ],
            "example": drafts.example_or_none(draft.raw.get("model", {})),
        }


HANDLERS: dict[str, Step] = {
    step.key: step for step in (ModelStep(), TrainingStep(), FederationStep(), DataStep())
}
