"""Retention: the raw-data clean-up's horizon (``retention_state``).

Revision ID: 0005_retention
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from its.db.types import UTCDateTime

revision = "0005_retention"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_state",
        sa.Column("name", sa.String(32), nullable=False, comment="what is cleaned: readings"),
        sa.Column(
            "horizon",
            UTCDateTime(),
            nullable=False,
            comment="raw rows before this may have been deleted: only the roll-ups answer there",
        ),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retention_state")),
        comment="How far the raw-data clean-up has reached (its/db/retention.py); it only moves "
        "on.",
    )


def downgrade() -> None:
    op.drop_table("retention_state")
