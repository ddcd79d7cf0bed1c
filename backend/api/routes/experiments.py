"""Comparing jobs (the compare page's data): GET /api/v1/compare?jobs=3,5."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from resonfl_server.backend.api.deps import CurrentUser, SessionDep, StoreDep
from resonfl_server.backend.schemas.experiments import (
    ComparedJob,
    ComparisonPublic,
    MetricComparison,
    SettingDiff,
)
from resonfl_server.backend.services import experiments

router = APIRouter(tags=["experiments"])


@router.get("/compare", response_model=ComparisonPublic)
def read_comparison(
    session: SessionDep,
    store: StoreDep,
    user: CurrentUser,
    jobs: Annotated[list[str], Query(description="2-8 job ids: jobs=3,5 or jobs=3&jobs=5")],
) -> ComparisonPublic:
    """The settings two or more jobs differ in, their curves per metric, final values and the
    difference of each from the first job."""
    ids = experiments.parse_ids(",".join(jobs))
    return comparison_public(experiments.compare(session, store, user, ids))


def comparison_public(cmp: experiments.Comparison) -> ComparisonPublic:
    return ComparisonPublic(
        jobs=[ComparedJob(id=j.id, name=j.name, status=j.status.value, num_rounds=j.num_rounds)
              for j in cmp.jobs],
        differing=[SettingDiff(setting=k, values=v) for k, v in cmp.differing],
        same_settings=cmp.same,
        metrics=[MetricComparison(**vars(m)) for m in cmp.metrics],
    )
