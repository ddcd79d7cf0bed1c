"""What the job page shows, computed from the job store: a round x site grid, metric curves,
the per-round time split, logs, errors in plain words and the downloadable files.

Every round row exists from the start (pending until it runs), so the page keeps its shape
while it refreshes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup

from resonfl_server.backend.models import (
    DecisionStatus,
    Job,
    Round,
    SecAggRound,
    SiteDecision,
    SiteResult,
    utcnow,
)
from resonfl.job import REQUIREMENTS
from resonfl_server.backend.services.site_api import read_environments
from resonfl_server.backend.services.twins import compare
from resonfl_server.backend.storage import ArtifactStore
from resonfl_server.backend.web.charts import (
    GLOBAL_COLOR,
    PALETTE,
    Series,
    line_chart,
    stacked_bars,
)

LOG_TAIL_LINES = 40


@dataclass
class RoundRow:
    number: int
    status: str
    cells: list[tuple[str, str]]  # per site: (status, title text)
    round_s: float | None = None
    train_s: float | None = None
    overhead_s: float | None = None
    download: bool = False
    note: str = ""  # e.g. a secure-aggregation round's stage


@dataclass
class JobView:
    job: Job
    owner: str
    ended: bool
    rounds_done: int
    rows: list[RoundRow]
    charts: list[Markup]
    errors: list[str]
    logs: list[tuple[str, int | None, str]]  # site, round, tail
    final_ready: bool
    duration_s: float | None
    global_metrics: dict[str, Any] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    environments: list[EnvRow] = field(default_factory=list)
    twin: TwinPanel | None = None
    round0: list[PhaseRow] = field(default_factory=list)  # where round 0's time went
    awaiting: list[str] = field(default_factory=list)  # sites whose approval is pending
    decisions: list[SiteDecision] = field(default_factory=list)  # every site's decision

    @property
    def polling(self) -> bool:
        """The live region polls while the job or its centralized twin runs."""
        return not self.ended or (self.twin is not None and self.twin.running)

    @property
    def phase_columns(self) -> tuple[tuple[str, str], ...]:
        return PHASE_COLUMNS


@dataclass
class TwinPanel:
    """The "FL vs centralized" card: the button (or why it is disabled) and, once a twin ran,
    both curves per metric, the gap and the share of it closed per round."""

    unavailable: str | None = None  # why no twin can run (data only at the sites)
    twin_of: int | None = None  # this job IS a twin of that job
    twin_id: int | None = None
    twin_status: str = ""
    site: str = ""
    steps_per_round: int | None = None
    charts: list[Markup] = field(default_factory=list)
    gaps: list[tuple[str, float, int, bool]] = field(default_factory=list)  # label, gap, round, higher
    closed: list[tuple[int, float | None, float | None, float | None]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.twin_status in ("queued", "running")


def twin_panel(job: Job, twin: Job | None, unavailable: str | None) -> TwinPanel:
    panel = TwinPanel(unavailable=unavailable, twin_of=job.twin_of_id)
    if twin is None:
        return panel
    cmp = compare(job, twin)
    panel.twin_id, panel.twin_status, panel.site = twin.id, twin.status.value, cmp.site
    panel.steps_per_round = cmp.steps_per_round
    closed: dict[int, dict[str, float]] = {}
    for curve in cmp.curves:
        fl = Series(f"FL (job {job.id})", curve.fl, PALETTE[0])
        central = Series(f"centralized (job {twin.id})", curve.central, GLOBAL_COLOR, dashed=True)
        panel.charts.append(
            line_chart(f"FL vs centralized: {curve.label}", [fl, central], job.num_rounds)
        )
        if curve.gap is not None and curve.gap_round is not None:
            panel.gaps.append((curve.label, curve.gap, curve.gap_round, curve.higher_is_better))
        fl_at = dict(curve.fl)
        for r, share in curve.closed:
            closed.setdefault(r, {})[curve.key] = share
            closed[r][curve.key + "_fl"] = fl_at[r]
    shares = [
        Series(f"{c.label} gap closed (%)", [(r, v * 100) for r, v in c.closed], PALETTE[i + 1])
        for i, c in enumerate(cmp.curves)
        if c.closed
    ]
    if shares:
        panel.charts.append(line_chart("Share of the gap closed (%)", shares, job.num_rounds))
    panel.closed = [
        (r, v.get("global_top1_fl"), v.get("global_top1"), v.get("global_val_loss"))
        for r, v in sorted(closed.items())
    ]
    return panel


# Round 0's breakdown: (RoundPhases / InitPhases key, column heading), in the order they run.
PHASE_COLUMNS = (
    ("prepare_s", "Bundle + data"),
    ("download_s", "Weights download"),
    ("process_s", "Process start"),
    ("import_s", "Import model_def"),
    ("build_s", "Model build"),
    ("data_s", "Data load"),
    ("eval_s", "Evaluate"),
    ("train_s", "First train"),
    ("save_s", "Save"),
)


@dataclass
class PhaseRow:
    """One line of round 0's breakdown: the aggregator's initial weights, or a site."""

    who: str
    cells: list[float | None]  # per PHASE_COLUMNS
    process: str  # "warm" (a pre-started process ran it), "cold" (started for it) or ""


def round0_rows(job: Job) -> list[PhaseRow]:
    """The aggregator's initial-weights step, then each site's round 0, as reported."""
    rows = []
    if job.init_phases:
        rows.append(_phase_row("initial weights (server)", job.init_phases, "warm"))
    for res in sorted(job.results, key=lambda r: r.site):
        if res.round_num == 0 and res.phases:
            rows.append(_phase_row(res.site, res.phases, "started_process"))
    return rows


def _phase_row(who: str, phases: dict[str, Any], flag: str) -> PhaseRow:
    value = phases.get(flag)
    warm = value if flag == "warm" else (None if value is None else not value)
    return PhaseRow(
        who=who,
        cells=[_finite(phases.get(key)) for key, _ in PHASE_COLUMNS],
        process="" if warm is None else ("warm" if warm else "cold"),
    )


@dataclass
class EnvRow:
    """One site's line in the Requirements card."""

    site: str
    state: str  # "installed", "cached", "failed", "waiting"
    packages: list[str] = field(default_factory=list)
    seconds: float | None = None
    error: str = ""


def environment_rows(job: Job, reports: dict[str, dict[str, Any]]) -> list[EnvRow]:
    rows = []
    for site in job.sites:
        rep = reports.get(site)
        if rep is None:
            rows.append(EnvRow(site, "waiting"))
        elif rep.get("error"):
            rows.append(EnvRow(site, "failed", error=plain_error(str(rep["error"]))))
        else:
            rows.append(
                EnvRow(
                    site,
                    "cached" if rep.get("cached") else "installed",
                    [str(p) for p in rep.get("packages") or []],
                    _finite(rep.get("seconds")),
                )
            )
    return rows


def plain_error(text: str | None) -> str:
    """The last meaningful line of a traceback, or the message itself, trimmed."""
    if not text:
        return ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Traceback"):
        return lines[-1][:500]
    joined = " ".join(lines)
    return joined if len(joined) <= 600 else joined[:600] + "…"


def duration_s(job: Job) -> float | None:
    if job.started_at is None:
        start: datetime | None = job.created_at
    else:
        start = job.started_at
    if start is None:
        return None
    end = job.finished_at or utcnow()
    return max((end - start).total_seconds(), 0.0)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _series(results: list[SiteResult], sites: list[str], key: str) -> list[Series]:
    out = []
    for i, site in enumerate(sites):
        points = []
        for res in results:
            if res.site == site:
                value = _finite((res.metrics or {}).get(key))
                if value is not None:
                    points.append((res.round_num, value))
        if points:
            out.append(Series(site, sorted(points), PALETTE[i % len(PALETTE)]))
    return out


def _global(rounds: list[Round], key: str, label: str) -> Series | None:
    points = []
    for rnd in rounds:
        value = _finite(rnd.metrics.get(key))
        if value is not None:
            points.append((rnd.number, value))
    return Series(label, points, GLOBAL_COLOR, dashed=True) if points else None


# round metrics that robust and private aggregators report (`Aggregator.round_metrics`)
AGGREGATOR_METRICS = (
    ("update_norm_median", "median update norm"),
    ("clipped_sites", "sites clipped"),
    ("krum_kept_sites", "updates Krum kept"),
)


def charts(job: Job) -> list[Markup]:
    sites, results, rounds, n = list(job.sites), list(job.results), list(job.rounds), job.num_rounds
    out = []
    for title, key, global_key, global_label in (
        ("Train loss", "train_loss", "train_loss", "all sites (weighted)"),
        ("Validation loss", "val_loss", "global_val_loss", "global model"),
        ("Top-1 accuracy", "top1", "global_top1", "global model"),
    ):
        series = _series(results, sites, key)
        glob = _global(rounds, global_key, global_label)
        out.append(line_chart(title, series + ([glob] if glob else []), n))
    privacy = _series(results, sites, "dp_epsilon")
    spent = _global(rounds, "dp_epsilon", "job (DP-FedAvg: the server's; DP-SGD: the worst site)")
    if privacy or spent:  # DP jobs only: the budget each site (or the server) has spent
        out.append(
            line_chart("Privacy budget spent (epsilon)", privacy + ([spent] if spent else []), n)
        )
    robust = []
    for i, (key, label) in enumerate(AGGREGATOR_METRICS):
        found = _global(rounds, key, label)
        if found is not None:
            robust.append(Series(label, found.points, PALETTE[i % len(PALETTE)]))
    if robust:  # what a robust or private aggregator did each round (clipped, kept, norms)
        out.append(line_chart("What the aggregator did", robust, n))
    split = [
        (r.number, float(r.train_s_max or 0.0), float(r.overhead_s or 0.0))
        for r in rounds
        if r.round_s is not None
    ]
    out.append(stacked_bars("Time per round (s)", split, n))
    return out


def build(
    job: Job, owner: str, store: ArtifactStore, logs: dict[str, list[tuple[SiteResult, str]]]
) -> JobView:
    requirements = _requirements(store, job)
    by_round: dict[int, dict[str, SiteResult]] = {}
    log_rows: list[tuple[str, int | None, str]] = []
    for res in job.results:
        by_round.setdefault(res.round_num, {})[res.site] = res
    round_rows = {r.number: r for r in job.rounds}
    secure = {r.round_num: r for r in job.secagg_rounds}  # secure aggregation's stage state
    rows = []
    for number in range(job.num_rounds):
        rnd = round_rows.get(number)
        cells = []
        for site in job.sites:
            found = by_round.get(number, {}).get(site)
            if found is None:
                cells.append(("waiting" if rnd is None else "idle", ""))
            else:
                title = plain_error(found.error) if found.error else ""
                if found.train_s is not None and not title:
                    title = f"trained {found.train_s:.1f} s on {found.samples or 0} samples"
                    if number in secure:
                        title = f"trained {found.train_s:.1f} s; its update left the site masked"
                cells.append((found.status.value, title))
        note = ""
        if rnd is not None and rnd.status.value == "running" and number in secure:
            note = f"secure aggregation: {_stage(secure[number])}"
        rows.append(
            RoundRow(
                number=number,
                status=rnd.status.value if rnd else "pending",
                note=note,
                cells=cells,
                round_s=rnd.round_s if rnd else None,
                train_s=rnd.train_s_max if rnd else None,
                overhead_s=rnd.overhead_s if rnd else None,
                download=store.global_model_path(job.id, number).is_file(),
            )
        )
    errors = []
    if job.error:
        errors.append(plain_error(job.error))
    for rnd in job.rounds:
        if rnd.error and plain_error(rnd.error) not in errors:
            errors.append(f"Round {rnd.number}: {plain_error(rnd.error)}")
    for res in job.results:
        if res.error and res.status.value == "failed":
            line = f"{res.site}, round {res.round_num}: {plain_error(res.error)}"
            if not any(plain_error(res.error) in e for e in errors):
                errors.append(line)
    for site in job.sites:
        entries = [(r, t) for r, t in logs.get(site, []) if t]
        if entries:
            res, text = entries[-1]
            tail = "\n".join(text.rstrip().splitlines()[-LOG_TAIL_LINES:])
            log_rows.append((site, res.round_num, tail))
        else:
            log_rows.append((site, None, ""))
    done = sum(1 for r in job.rounds if r.status.value == "done")
    last_metrics = {}
    for rnd in job.rounds:
        if rnd.metrics:
            last_metrics = rnd.metrics
    return JobView(
        job=job,
        owner=owner,
        ended=job.status.is_terminal,
        rounds_done=done,
        rows=rows,
        charts=charts(job),
        errors=errors,
        logs=log_rows,
        final_ready=store.global_model_path(job.id).is_file(),
        duration_s=duration_s(job),
        global_metrics=last_metrics,
        requirements=requirements,
        environments=(
            environment_rows(job, read_environments(store, job)) if requirements else []
        ),
        round0=round0_rows(job),
        awaiting=[d.site for d in job.decisions if d.status == DecisionStatus.PENDING],
        decisions=list(job.decisions),
    )


def _stage(row: SecAggRound) -> str:
    """Where a secure-aggregation round is, in words (services/secagg.py's stages)."""
    return {
        "keys": "exchanging keys",
        "shares": f"{len(row.sites)} sites sharing secrets",
        "masked": f"{len(row.sharers)} sites training, uploads masked",
        "unmask": f"unmasking the sum of {len(row.survivors)} ({len(row.dropped)} dropped)",
        "ready": "unmasked, aggregating",
    }[row.stage.value]


def _requirements(store: ArtifactStore, job: Job) -> list[str]:
    path = store.job_folder(job.id) / REQUIREMENTS
    if not path.is_file():
        return []
    lines = path.read_text("utf-8", errors="replace").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
