"""sites report their datasets and their policy

`sites.datasets` (name, format, description, samples, label counts per dataset: never file
names) and `sites.policy` (submitters, approval, max GPUs / wall time, network,
requirements), both as the site worker last reported them with its heartbeat.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 05:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("datasets", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(sa.Column("policy", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("policy")
        batch_op.drop_column("datasets")
