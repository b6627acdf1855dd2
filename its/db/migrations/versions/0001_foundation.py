"""Foundation: road network, readings (hypertable on TimescaleDB), station state, dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from its.db import timescale
from its.db.types import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corridors",
        sa.Column("corridor_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("corridor_id", name=op.f("pk_corridors")),
    )
    op.create_table(
        "segments",
        sa.Column("segment_id", sa.String(64), nullable=False),
        sa.Column("corridor_id", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("road_class", sa.String(32), nullable=False),
        sa.Column("lanes", sa.SmallInteger(), nullable=False),
        sa.Column("free_flow_kph", sa.Float(), nullable=False),
        sa.Column("capacity_vph_lane", sa.Float(), nullable=False),
        sa.Column("length_m", sa.Float(), nullable=False),
        sa.Column(
            "geometry", sa.JSON(), nullable=False, comment="GeoJSON LineString coordinates, WGS84"
        ),
        sa.ForeignKeyConstraint(
            ["corridor_id"],
            ["corridors.corridor_id"],
            name=op.f("fk_segments_corridor_id_corridors"),
        ),
        sa.PrimaryKeyConstraint("segment_id", name=op.f("pk_segments")),
    )
    op.create_table(
        "stations",
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("segment_id", sa.String(64), nullable=False),
        sa.Column("lanes", sa.SmallInteger(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("position_m", sa.Float(), server_default="0", nullable=False),
        sa.Column("detector", sa.String(32), server_default="dual-loop", nullable=False),
        sa.Column("vehicle_length_m", sa.Float(), server_default="6.7", nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"], ["segments.segment_id"], name=op.f("fk_stations_segment_id_segments")
        ),
        sa.PrimaryKeyConstraint("station_id", name=op.f("pk_stations")),
    )
    op.create_index(op.f("ix_stations_segment_id"), "stations", ["segment_id"])
    op.create_table(
        "readings",
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("lane", sa.SmallInteger(), nullable=False),
        sa.Column("interval_start", UTCDateTime(), nullable=False),
        sa.Column("period_s", sa.SmallInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("occupancy", sa.Float(), nullable=True),
        sa.Column("speed_kph", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), server_default="ok", nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("station_id", "lane", "interval_start", name="pk_readings"),
        comment="One row per station, lane and interval; a TimescaleDB hypertable where available.",
    )
    op.create_index("ix_readings_interval_start", "readings", ["interval_start"])
    op.create_table(
        "station_status",
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column(
            "state", sa.String(16), nullable=False, comment="online | offline (MQTT Last Will)"
        ),
        sa.Column("state_at", UTCDateTime(), nullable=True, comment="time the station stamped"),
        sa.Column(
            "updated_at", UTCDateTime(), nullable=False, comment="time the server received it"
        ),
        sa.PrimaryKeyConstraint("station_id", name=op.f("pk_station_status")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("topic", sa.String(512), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column(
            "payload_encoding",
            sa.String(16),
            server_default="utf-8",
            nullable=False,
            comment="utf-8, or base64 where the payload was not valid UTF-8",
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(op.f("ix_dead_letters_received_at"), "dead_letters", ["received_at"])
    timescale.make_readings_hypertable(op.get_bind())


def downgrade() -> None:
    op.drop_index(op.f("ix_dead_letters_received_at"), table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("station_status")
    op.drop_index("ix_readings_interval_start", table_name="readings")
    op.drop_table("readings")
    op.drop_index(op.f("ix_stations_segment_id"), table_name="stations")
    op.drop_table("stations")
    op.drop_table("segments")
    op.drop_table("corridors")
