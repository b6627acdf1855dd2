"""Bottlenecks: one row per active-bottleneck episode (PeMS method), written by the evaluator.

Revision ID: 0008_bottlenecks
Revises: 0007_measure_views
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from its.db.types import UTCDateTime

revision = "0008_bottlenecks"
down_revision = "0007_measure_views"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bottlenecks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("head_station_id", sa.String(64), nullable=False, comment="last queued station"),
        sa.Column(
            "downstream_station_id", sa.String(64), nullable=False, comment="next station, fast"
        ),
        sa.Column(
            "segment_id", sa.String(64), nullable=False, comment="segment of the head station"
        ),
        sa.Column("corridor_id", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column(
            "started_at", UTCDateTime(), nullable=False, comment="first qualifying 5-min interval"
        ),
        sa.Column(
            "detected_at", UTCDateTime(), nullable=False, comment="when n of m intervals held"
        ),
        sa.Column(
            "last_seen", UTCDateTime(), nullable=False, comment="end of the last qualifying one"
        ),
        sa.Column("ended_at", UTCDateTime(), nullable=True, comment="null while active"),
        sa.Column("intervals", sa.Integer(), nullable=False, comment="qualifying 5-min intervals"),
        sa.Column(
            "delay_veh_h",
            sa.Float(),
            nullable=False,
            comment="delay against 60 km/h over the queue",
        ),
        sa.Column(
            "max_extent_km",
            sa.Float(),
            nullable=False,
            comment="longest queue upstream of the head",
        ),
        sa.Column("farthest_station_id", sa.String(64), nullable=True, comment="end of that queue"),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_bottlenecks_alert_id_alerts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bottlenecks")),
        comment="Bottleneck episodes (PeMS method) kept by the alerts evaluator for analysts.",
    )
    op.create_index("ix_bottlenecks_started_at", "bottlenecks", ["started_at"])
    op.create_index("ix_bottlenecks_head_station_id", "bottlenecks", ["head_station_id"])


def downgrade() -> None:
    op.drop_index("ix_bottlenecks_head_station_id", table_name="bottlenecks")
    op.drop_index("ix_bottlenecks_started_at", table_name="bottlenecks")
    op.drop_table("bottlenecks")
