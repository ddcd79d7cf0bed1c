"""a job may be the centralized twin of another

`jobs.twin_of_id`: the FL job whose recipe this job runs centrally on the pooled training
shards (issue 10); null for every other job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 05:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("twin_of_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_jobs_twin_of_id", ["twin_of_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_twin_of_id")
        batch_op.drop_column("twin_of_id")
