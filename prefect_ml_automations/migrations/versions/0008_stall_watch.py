"""Which RUN_STALLED automations a sensor watches for (and in which project), and since when: a
stall automation added (or enabled again) later fires for the runs that stall from then on,
though they went quiet before — and never for a stall that was already over when it came.

Revision ID: 0008
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    watch = op.create_table(
        "ml_stall_watch",
        sa.Column("sensor", sa.String(255), primary_key=True),
        sa.Column("automation", sa.String(255), primary_key=True),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )
    # The sensors there are: the stall automations each has now were watched all along (the
    # store kept their runs' quiet times), which the first cycle records — an empty name.
    sensors = sa.table("ml_sensor_state", sa.column("name", sa.String(255)))
    always = datetime(1970, 1, 1, tzinfo=UTC)
    op.execute(
        watch.insert().from_select(
            ["sensor", "automation", "project", "since"],
            sa.select(sensors.c.name, sa.literal(""), sa.literal(""), sa.literal(always)),
        )
    )


def downgrade() -> None:
    op.drop_table("ml_stall_watch")
