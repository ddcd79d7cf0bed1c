"""round phases, the sandbox each site applied, the aggregator's initial-weights phases

`site_results.phases` (where a site's round time went: process start, imports, model build,
data load, training ...), `site_results.sandbox` (the confinement and limits it applied:
`resonfl status` read them from the round log's first line before) and `jobs.init_phases`
(the aggregator's initial-weights step). All nullable JSON, validated by the API
(backend/schemas/phases.py); older rows have none.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("site_results") as batch:
        batch.add_column(sa.Column("phases", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("sandbox", sa.JSON(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("init_phases", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("init_phases")
    with op.batch_alter_table("site_results") as batch:
        batch.drop_column("sandbox")
        batch.drop_column("phases")
