"""Quarantine for events evaluation can not take; a firing's next attempt apart from its lease;
heartbeats of the sensor flow runs (so a killed one is marked crashed, not left Running).

`lease_until` used to mean both "a sensor holds this firing until then" and "try it again after
then" (the back-off). Now a lease is only a lease, so `retry` can refuse a firing that a sensor
is delivering right now and let one waiting for its back-off go at once.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ml_quarantine",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("origin", sa.String(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
    )
    op.create_table(
        "ml_sensor_runs",
        sa.Column("flow_run_id", sa.String(36), primary_key=True),
        sa.Column("sensor", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("ml_firings") as batch:
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    # A pending firing's lease_until in the future was, until now, its back-off time.
    op.execute(
        "UPDATE ml_firings SET retry_at = lease_until, lease_until = NULL "
        "WHERE status = 'pending' AND attempts > 0 AND error IS NOT NULL"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE ml_firings SET lease_until = retry_at WHERE retry_at IS NOT NULL "
        "AND lease_until IS NULL"
    )
    with op.batch_alter_table("ml_firings") as batch:
        batch.drop_column("retry_at")
    op.drop_table("ml_sensor_runs")
    op.drop_table("ml_quarantine")
