"""typed round times and a round_metrics table

`rounds.timings` (free-form JSON holding times, counters and metrics) becomes typed columns
(`min_results`, `redispatched`, `round_s` ... `aggregate_s`); each round's samples-weighted
metrics become rows of `round_metrics`. Existing rows are carried over.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 03:00:00
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMES = ("round_s", "train_s_max", "overhead_s", "site_overhead_s", "transport_s", "aggregate_s")

_rounds = sa.table(
    "rounds",
    sa.column("id", sa.Integer),
    sa.column("timings", sa.JSON),
    sa.column("min_results", sa.Integer),
    sa.column("redispatched", sa.JSON),
    *(sa.column(name, sa.Double) for name in TIMES),
)
_metrics = sa.table(
    "round_metrics",
    sa.column("round_id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("value", sa.Double),
)


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # a driver that hands JSON back as text
        value = json.loads(value or "{}")
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def upgrade() -> None:
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("min_results", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("redispatched", sa.JSON(), nullable=True))
        for name in TIMES:
            batch_op.add_column(sa.Column(name, sa.Double(), nullable=True))

    conn = op.get_bind()
    metric_rows: list[dict[str, Any]] = []
    for row_id, raw in conn.execute(sa.select(_rounds.c.id, _rounds.c.timings)).all():
        timings = _as_dict(raw)
        needed = timings.get("min_results")
        counts = timings.get("redispatched")
        values: dict[str, Any] = {
            "min_results": needed if isinstance(needed, int) else None,
            "redispatched": counts if isinstance(counts, dict) else {},
        }
        values.update({name: _number(timings.get(name)) for name in TIMES})
        conn.execute(sa.update(_rounds).where(_rounds.c.id == row_id).values(**values))
        for name, value in _as_dict(timings.get("metrics")).items():
            if _number(value) is not None:
                metric_rows.append({"round_id": row_id, "name": str(name)[:128], "value": value})

    # SQLite rebuilds the table here (copy, drop, rename): the metrics table is made after it,
    # so that dropping the old rounds table cannot cascade into metric rows.
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.alter_column("redispatched", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("timings")

    op.create_table(
        "round_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_round_metrics_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round_metrics")),
        sa.UniqueConstraint("round_id", "name", name=op.f("uq_round_metrics_round_id_name")),
    )
    with op.batch_alter_table("round_metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_round_metrics_round_id"), ["round_id"], unique=False)
    if metric_rows:
        conn.execute(sa.insert(_metrics), metric_rows)


def downgrade() -> None:
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timings", sa.JSON(), nullable=True))
    conn = op.get_bind()
    metrics: dict[int, dict[str, float]] = {}
    for round_id, name, value in conn.execute(
        sa.select(_metrics.c.round_id, _metrics.c.name, _metrics.c.value)
    ).all():
        metrics.setdefault(round_id, {})[name] = value
    columns = [_rounds.c.id, _rounds.c.min_results, _rounds.c.redispatched]
    columns += [_rounds.c[name] for name in TIMES]
    for row in conn.execute(sa.select(*columns)).mappings().all():
        timings: dict[str, Any] = {n: row[n] for n in TIMES if row[n] is not None}
        if row["min_results"] is not None:
            timings["min_results"] = row["min_results"]
        if row["redispatched"]:
            timings["redispatched"] = _as_dict(row["redispatched"])
        if row["id"] in metrics:
            timings["metrics"] = metrics[row["id"]]
        conn.execute(sa.update(_rounds).where(_rounds.c.id == row["id"]).values(timings=timings))
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.alter_column("timings", existing_type=sa.JSON(), nullable=False)
        for name in reversed(TIMES):
            batch_op.drop_column(name)
        batch_op.drop_column("redispatched")
        batch_op.drop_column("min_results")
    with op.batch_alter_table("round_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_round_metrics_round_id"))
    op.drop_table("round_metrics")
