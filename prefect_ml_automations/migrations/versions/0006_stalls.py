"""Stalled runs (`RUN_STALLED`): each run's last sign of life, and — while a stall automation
may still fire for it — when it went quiet, indexed so that a cycle finds the runs whose quiet
time has run out without reading the others.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ml_state_runs") as table:
        table.add_column(sa.Column("active", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("quiet", sa.BigInteger(), nullable=True))
    op.create_index("ix_ml_state_runs_quiet", "ml_state_runs", ["sensor", "quiet"])


def downgrade() -> None:
    op.drop_index("ix_ml_state_runs_quiet", "ml_state_runs")
    with op.batch_alter_table("ml_state_runs") as table:
        table.drop_column("quiet")
        table.drop_column("active")
