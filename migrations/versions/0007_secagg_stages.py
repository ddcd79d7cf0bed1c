"""secagg_rounds, secagg_messages: the stage state and messages of secure-aggregation rounds

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import resonfl_server.backend.models.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    utc = resonfl_server.backend.models.base.UTCDateTime(timezone=True)
    op.create_table(
        "secagg_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("round_num", sa.Integer(), nullable=False),
        sa.Column(
            "stage",
            sa.Enum(
                "keys",
                "shares",
                "masked",
                "unmask",
                "ready",
                name="secaggstage",
                native_enum=False,
                length=16,
            ),  # fmt: skip
            nullable=False,
        ),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("stage_timeout_s", sa.Double(), nullable=False),
        sa.Column("stage_deadline", utc, nullable=True),
        sa.Column("sites", sa.JSON(), nullable=False),
        sa.Column("sharers", sa.JSON(), nullable=False),
        sa.Column("survivors", sa.JSON(), nullable=False),
        sa.Column("dropped", sa.JSON(), nullable=False),
        sa.Column("updated_at", utc, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_secagg_rounds_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secagg_rounds")),
        sa.UniqueConstraint("job_id", "round_num", name=op.f("uq_secagg_rounds_job_id_round_num")),
    )
    op.create_table(
        "secagg_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("round_num", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sender", sa.String(length=63), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_secagg_messages_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secagg_messages")),
        sa.UniqueConstraint(
            "job_id",
            "round_num",
            "kind",
            "sender",
            name=op.f("uq_secagg_messages_job_id_round_num_kind_sender"),
        ),  # fmt: skip
    )
    op.create_index(op.f("ix_secagg_messages_job_id"), "secagg_messages", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_secagg_messages_job_id"), table_name="secagg_messages")
    op.drop_table("secagg_messages")
    op.drop_table("secagg_rounds")
