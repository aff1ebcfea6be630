"""Which RUN_STALLED automations a sensor watches for, and since when: a stall automation
added (or enabled again) later fires for the runs that stall from then on, though they went
quiet before — and never for a stall that was already over when it came.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ml_stall_watch",
        sa.Column("sensor", sa.String(255), primary_key=True),
        sa.Column("automation", sa.String(255), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ml_stall_watch")
