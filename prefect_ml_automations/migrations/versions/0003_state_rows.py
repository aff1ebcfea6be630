"""The evaluator state as rows (a run, a run's series of a metric, a metric, a seen event)
instead of one blob per sensor, so that a cycle reads and writes only what its batch touches.

A blob left by an earlier version is turned into rows by the first cycle that opens it
(`prefect_ml_automations.stored_state`), not here: that needs the evaluator's code.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ml_state_runs",
        sa.Column("sensor", sa.String(255), primary_key=True),
        sa.Column("project", sa.Text(), primary_key=True),
        sa.Column("run_id", sa.Text(), primary_key=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("user", sa.Text()),
        sa.Column("state", sa.String(32)),
        sa.Column("fired", sa.Text(), nullable=False),
    )
    op.create_table(
        "ml_state_series",
        sa.Column("sensor", sa.String(255), primary_key=True),
        sa.Column("project", sa.Text(), primary_key=True),
        sa.Column("metric", sa.Text(), primary_key=True),
        sa.Column("run_id", sa.Text(), primary_key=True),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("tail", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "ml_state_metrics",
        sa.Column("sensor", sa.String(255), primary_key=True),
        sa.Column("project", sa.Text(), primary_key=True),
        sa.Column("metric", sa.Text(), primary_key=True),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("shift", sa.Float()),
        sa.Column("members", sa.Text(), nullable=False),
    )
    op.create_table(
        "ml_state_seen",
        sa.Column("sensor", sa.String(255), primary_key=True),
        sa.Column("identity", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    for table in ("ml_state_seen", "ml_state_metrics", "ml_state_series", "ml_state_runs"):
        op.drop_table(table)
