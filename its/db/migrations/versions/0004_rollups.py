"""Roll-ups: per-station 5-minute, hourly and daily sums, the dirty-key log and its triggers.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from its.db import rollup_sql
from its.db.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LEVELS = {
    "rollup_5m": "Per station and 5-minute bucket (UTC-aligned): sums.",
    "rollup_1h": "Per station and local hour of the network's zone: sums.",
    "rollup_1d": "Per station and local day of the network's zone: sums.",
}


def _rollup_table(name: str, comment: str) -> None:
    op.create_table(
        name,
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column(
            "flow_sum", sa.Float(), nullable=False, comment="sum of lane flows q (veh/h) over rows"
        ),
        sa.Column(
            "intervals", sa.Integer(), nullable=False, comment="distinct interval starts seen"
        ),
        sa.Column("lane_rows", sa.Integer(), nullable=False, comment="lane intervals seen"),
        sa.Column("period_s", sa.SmallInteger(), nullable=False, comment="longest period seen"),
        sa.Column("occ_sum", sa.Float(), nullable=False, comment="sum of lane occupancies"),
        sa.Column("occ_n", sa.Integer(), nullable=False, comment="lane rows with an occupancy"),
        sa.Column(
            "q_speed", sa.Float(), nullable=False, comment="sum of q over lanes with a speed"
        ),
        sa.Column(
            "qv_measured", sa.Float(), nullable=False, comment="sum of q / v, measured speeds"
        ),
        sa.Column(
            "occ_est",
            sa.Float(),
            nullable=False,
            comment="sum of occupancy over single-loop lanes (q / v = occ 1000 / g)",
        ),
        sa.Column("last_start", UTCDateTime(), nullable=False, comment="newest interval start"),
        sa.PrimaryKeyConstraint("station_id", "bucket_start", name=op.f(f"pk_{name}")),
        comment=comment,
    )
    op.create_index(f"ix_{name}_bucket_start", name, ["bucket_start"])


TARGET_LEVELS = {
    "rollup_segment_5m": "Per segment and 5-minute bucket: its stations' sums (network-dependent).",
    "rollup_corridor_5m": "Per corridor and 5-minute bucket: its stations' sums "
    "(network-dependent).",
}


def _target_table(name: str, comment: str) -> None:
    op.create_table(
        name,
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("flow", sa.Float(), nullable=False, comment="sum of station flows (veh/h)"),
        sa.Column("stations", sa.Integer(), nullable=False, comment="stations reporting"),
        sa.Column(
            "q_speed", sa.Float(), nullable=False, comment="sum of stations' mean q with a speed"
        ),
        sa.Column("q_over_v", sa.Float(), nullable=False, comment="sum of stations' mean q / v"),
        sa.Column("occ_sum", sa.Float(), nullable=False),
        sa.Column("occ_n", sa.Integer(), nullable=False),
        sa.Column("lane_rows", sa.Integer(), nullable=False, comment="lane intervals seen"),
        sa.Column(
            "expected_own",
            sa.Float(),
            nullable=False,
            comment="lane intervals expected, reporting",
        ),
        sa.Column(
            "lanes_reporting", sa.Integer(), nullable=False, comment="lanes of reporting stations"
        ),
        sa.PrimaryKeyConstraint("target_id", "bucket_start", name=op.f(f"pk_{name}")),
        comment=comment,
    )
    op.create_index(f"ix_{name}_bucket_start", name, ["bucket_start"])


def upgrade() -> None:
    for name, comment in LEVELS.items():
        _rollup_table(name, comment)
    for name, comment in TARGET_LEVELS.items():
        _target_table(name, comment)
    op.create_table(
        "rollup_dirty",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column(
            "bucket_start", UTCDateTime(), nullable=False, comment="5-minute bucket to recompute"
        ),
        sa.Column(
            "marked_at", UTCDateTime(), nullable=False, server_default=sa.text("CURRENT_TIMESTAMP")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_dirty")),
        comment="Log of (station, 5-min bucket) keys whose raw readings changed (written by "
        "triggers on readings); the roll-up worker recomputes and deletes them.",
    )
    op.create_index("ix_rollup_dirty_bucket_start", "rollup_dirty", ["bucket_start"])
    conn = op.get_bind()
    rollup_sql.create_triggers(conn)
    rollup_sql.log_all_readings(conn)  # existing history gets its roll-ups from the worker


def downgrade() -> None:
    conn = op.get_bind()
    if rollup_sql.is_timescaledb(conn):
        # the continuous aggregates (its.db.caggs, made after migrating) read readings
        from its.db import caggs

        caggs.drop(conn)
    rollup_sql.drop_triggers(conn)
    op.drop_index("ix_rollup_dirty_bucket_start", table_name="rollup_dirty")
    op.drop_table("rollup_dirty")
    for name in (*LEVELS, *TARGET_LEVELS):
        op.drop_index(f"ix_{name}_bucket_start", table_name=name)
        op.drop_table(name)
