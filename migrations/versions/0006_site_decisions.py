"""site_decisions: each site's approval or rejection of a job (who, when, why)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 05:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import resonfl_server.backend.models.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    utc = resonfl_server.backend.models.base.UTCDateTime(timezone=True)
    op.create_table(
        "site_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "approved",
                "rejected",
                name="decisionstatus",
                native_enum=False,
                length=16,
            ),  # fmt: skip
            nullable=False,
        ),
        sa.Column("operator", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_at", utc, nullable=False),
        sa.Column("decided_at", utc, nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_site_decisions_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_decisions")),
        sa.UniqueConstraint("job_id", "site", name=op.f("uq_site_decisions_job_id_site")),
    )


def downgrade() -> None:
    op.drop_table("site_decisions")
