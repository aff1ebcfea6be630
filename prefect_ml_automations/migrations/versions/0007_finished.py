"""Baselines of finished runs (`baseline: finished` on RUN_METRIC_ZSCORE): whether each run
was ever seen finished. Runs whose last state is `finished` were.

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ml_state_runs") as table:
        table.add_column(
            sa.Column("finished", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    runs = sa.table("ml_state_runs", sa.column("state"), sa.column("finished", sa.Boolean()))
    op.execute(runs.update().where(runs.c.state == "finished").values(finished=True))


def downgrade() -> None:
    with op.batch_alter_table("ml_state_runs") as table:
        table.drop_column("finished")
