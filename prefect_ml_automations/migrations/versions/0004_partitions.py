"""Partitions: each inbox row says which project (or registry) it belongs to, a lock row per
partition lets sensors sharing the store each take their own, the workers at work say so, and a
source is leased to the worker polling it.

Revision ID: 0004
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ml_inbox") as batch:
        batch.add_column(sa.Column("partition", sa.Text(), nullable=False, server_default=""))
    op.create_index("ml_inbox_partition", "ml_inbox", ["partition", "id"])
    op.create_table("ml_partitions", sa.Column("partition", sa.Text(), primary_key=True))
    op.create_table(
        "ml_workers",
        sa.Column("worker", sa.String(255), primary_key=True),
        sa.Column("sensor", sa.String(255), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ml_source_leases",
        sa.Column("source", sa.String(255), primary_key=True),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    )
    # Events waiting from an earlier version: their partition, from their body (as
    # `prefect_ml_automations.partitions.partition_of` finds it, frozen here).
    connection = op.get_bind()
    inbox = sa.table("ml_inbox", sa.column("id"), sa.column("body"), sa.column("partition"))
    found: set[str] = set()
    for row in connection.execute(sa.select(inbox.c.id, inbox.c.body)).all():
        try:
            body = json.loads(row.body)
        except ValueError:
            body = None  # (a cycle quarantines it, whatever its partition)
        if not isinstance(body, dict):
            body = {}
        registry = body.get("registry")
        name = f"registry:{registry}" if registry is not None else str(body.get("project") or "")
        if name:
            connection.execute(inbox.update().where(inbox.c.id == row.id).values(partition=name))
        found.add(name)
    partitions = sa.table("ml_partitions", sa.column("partition"))
    if found:
        connection.execute(partitions.insert(), [{"partition": name} for name in sorted(found)])


def downgrade() -> None:
    op.drop_table("ml_source_leases")
    op.drop_table("ml_workers")
    op.drop_table("ml_partitions")
    op.drop_index("ml_inbox_partition", "ml_inbox")
    with op.batch_alter_table("ml_inbox") as batch:
        batch.drop_column("partition")
