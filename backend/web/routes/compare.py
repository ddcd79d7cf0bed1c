"""The compare page: two or more jobs side by side (curves overlaid per metric, the settings
that differ, final metrics and their difference). Its URL (/compare?jobs=3,5) is the link
to share."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from markupsafe import Markup

from resonfl_server.backend.api.deps import SessionDep, StoreDep
from resonfl_server.backend.services import experiments
from resonfl_server.backend.services.errors import InvalidSubmission, NotFound
from resonfl_server.backend.web.charts import PALETTE, Series, line_chart
from resonfl_server.backend.web.session import WebUser
from resonfl_server.backend.web.templating import redirect, render

router = APIRouter(tags=["web"], include_in_schema=False)


@router.get("/compare")
def read_compare(
    request: Request,
    user: WebUser,
    session: SessionDep,
    store: StoreDep,
    jobs: list[str] = Query(default_factory=list),  # noqa: B008 - FastAPI's idiom
) -> Response:
    text = ",".join(jobs)
    try:
        ids = experiments.parse_ids(text)
    except InvalidSubmission as exc:
        context = {"user": user, "nav": "jobs", "error": exc.message, "asked": text, "cmp": None}
        return render(request, "pages/compare.html", context, status_code=422)
    canonical = ",".join(str(i) for i in ids)
    if len(jobs) != 1 or jobs[0] != canonical:  # one shareable form of the URL
        return redirect(request, f"/compare?jobs={canonical}")
    try:
        cmp = experiments.compare(session, store, user, ids)
    except NotFound as exc:
        context = {"user": user, "nav": "jobs", "error": exc.detail, "asked": text, "cmp": None}
        return render(request, "pages/compare.html", context, status_code=404)
    context = {"user": user, "nav": "jobs", "cmp": cmp, "charts": _charts(cmp), "asked": text}
    return render(request, "pages/compare.html", context)


def _charts(cmp: experiments.Comparison) -> list[Markup]:
    rounds = max(j.num_rounds for j in cmp.jobs)
    charts = []
    for metric in cmp.metrics:
        series = [
            Series(f"#{j.id} {j.name}"[:40], metric.curves[j.id], PALETTE[i % len(PALETTE)], i > 0)
            for i, j in enumerate(cmp.jobs)
            if metric.curves[j.id]
        ]
        charts.append(line_chart(metric.label.capitalize(), series, rounds))
    return charts
