"""The one schema every backend shares (SQLAlchemy Core tables).

Names are part of the product: analysts and tools such as Grafana query ``stations``, ``readings``
and ``dead_letters`` directly, so they are documented in ``docs/storage.md`` and change only through
an alembic migration. Constraint names follow alembic's naming convention so ``alembic check`` and
migrations agree on every backend.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

from its.db.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

corridors = Table(
    "corridors",
    metadata,
    Column("corridor_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
)

segments = Table(
    "segments",
    metadata,
    Column("segment_id", String(64), primary_key=True),
    Column("corridor_id", ForeignKey("corridors.corridor_id"), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("road_class", String(32), nullable=False),
    Column("lanes", SmallInteger, nullable=False),
    Column("free_flow_kph", Float, nullable=False),
    Column("capacity_vph_lane", Float, nullable=False),
    Column("length_m", Float, nullable=False),
    Column("geometry", JSON, nullable=False, comment="GeoJSON LineString coordinates, WGS84"),
)

stations = Table(
    "stations",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("segment_id", ForeignKey("segments.segment_id"), nullable=False, index=True),
    Column("lanes", SmallInteger, nullable=False),
    Column("lon", Float, nullable=False),
    Column("lat", Float, nullable=False),
    Column("position_m", Float, nullable=False, server_default="0"),
    Column("detector", String(32), nullable=False, server_default="dual-loop"),
    Column("vehicle_length_m", Float, nullable=False, server_default="6.7"),
)

readings = Table(
    "readings",
    metadata,
    Column("station_id", String(64), nullable=False),
    Column("lane", SmallInteger, nullable=False),
    Column("interval_start", UTCDateTime, nullable=False),
    Column("period_s", SmallInteger, nullable=False),
    Column("count", Integer, nullable=True),
    Column("occupancy", Float, nullable=True),
    Column("speed_kph", Float, nullable=True),
    Column("status", String(16), nullable=False, server_default="ok"),
    Column("received_at", UTCDateTime, nullable=False),
    # The reading key: a duplicate is ignored, a late one accepted. It leads with the station so
    # one station's history is one index range; the time index below serves network-wide windows.
    PrimaryKeyConstraint("station_id", "lane", "interval_start", name="pk_readings"),
    Index("ix_readings_interval_start", "interval_start"),
    comment="One row per station, lane and interval; a TimescaleDB hypertable where available.",
)

station_status = Table(
    "station_status",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False, comment="online | offline (MQTT Last Will)"),
    Column("state_at", UTCDateTime, nullable=True, comment="time the station stamped"),
    Column("updated_at", UTCDateTime, nullable=False, comment="time the server received it"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime, nullable=False, index=True),
    Column("topic", String(512), nullable=False),
    Column("payload", Text, nullable=False),
    Column(
        "payload_encoding",
        String(16),
        nullable=False,
        server_default="utf-8",
        comment="utf-8, or base64 where the payload was not valid UTF-8",
    ),
    Column("reason", Text, nullable=False),
)

# --------------------------------------------------------------------------- alerts
# Written by the alerts evaluator (its/alerts); operators acknowledge through the API. Times of
# raise/clear are data time (the evaluator runs on the data clock), acknowledgements wall time.

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(64), nullable=False, comment="congestion | station-offline | ..."),
    Column("target_kind", String(16), nullable=False, comment="segment | station"),
    Column("target_id", String(64), nullable=False),
    Column("severity", String(16), nullable=False, comment="critical|major|minor|warning|info"),
    Column("active", Boolean, nullable=False),
    Column("message", Text, nullable=False),
    Column("details", JSON, nullable=False),
    Column("raised_at", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("cleared_at", UTCDateTime, nullable=True),
    Column("count", Integer, nullable=False),
    Column("acked_at", UTCDateTime, nullable=True),
    Column("acked_by", String(128), nullable=True),
    Column("ack_comment", Text, nullable=True),
    Column("assignee", String(128), nullable=True),
    # One ACTIVE alert per (rule, target): a repeat updates the row, a cleared row is history.
    Index(
        "uq_alerts_active_rule_target",
        "rule",
        "target_id",
        unique=True,
        sqlite_where=text("active"),
        postgresql_where=text("active"),
    ),
    Index("ix_alerts_raised_at", "raised_at"),
    comment="One row per alert episode: active until cleared, acknowledged independently.",
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column(
        "event",
        String(16),
        nullable=False,
        comment="raised | repeated | severity | cleared | acknowledged",
    ),
    Column("actor", String(128), nullable=True),
    Column("comment", Text, nullable=True),
    Column("details", JSON, nullable=True),
    comment="Audit history of every alert.",
)

rule_state = Table(
    "rule_state",
    metadata,
    Column("rule", String(64), nullable=False),
    Column("target_id", String(64), nullable=False),
    Column("state", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("rule", "target_id", name="pk_rule_state"),
    comment="Alert rules' memory (windows, streaks) and the evaluator's progress, so a restart "
    "resumes exactly.",
)

bottlenecks = Table(
    "bottlenecks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("head_station_id", String(64), nullable=False, comment="last queued station"),
    Column("downstream_station_id", String(64), nullable=False, comment="next station, fast"),
    Column("segment_id", String(64), nullable=False, comment="segment of the head station"),
    Column("corridor_id", String(64), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False, comment="first qualifying 5-min interval"),
    Column("detected_at", UTCDateTime, nullable=False, comment="when n of m intervals held"),
    Column("last_seen", UTCDateTime, nullable=False, comment="end of the last qualifying one"),
    Column("ended_at", UTCDateTime, nullable=True, comment="null while active"),
    Column("intervals", Integer, nullable=False, comment="qualifying 5-min intervals"),
    Column("delay_veh_h", Float, nullable=False, comment="delay against 60 km/h over the queue"),
    Column("max_extent_km", Float, nullable=False, comment="longest queue upstream of the head"),
    Column("farthest_station_id", String(64), nullable=True, comment="end of that queue"),
    Column("alert_id", ForeignKey("alerts.id", ondelete="SET NULL"), nullable=True),
    Index("ix_bottlenecks_started_at", "started_at"),
    Index("ix_bottlenecks_head_station_id", "head_station_id"),
    comment="Bottleneck episodes (PeMS method) kept by the alerts evaluator for analysts.",
)

# --------------------------------------------------------------------------- identity
# People (users, their sessions and one-time sign-in links), programs (API keys) and the audit
# log (its/auth). Only hashes of session tokens, sign-in links and key secrets are stored: a copy
# of the database signs nobody in.

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("role", String(16), nullable=False, comment="viewer | operator | supervisor | admin"),
    Column(
        "password_hash",
        String(255),
        nullable=True,
        comment="argon2id (PHC string); null: signs in only through a one-time link",
    ),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_signin_at", UTCDateTime, nullable=True),
    comment="People who sign in to the dashboard and API.",
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True, comment="SHA-256 of the cookie"),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("csrf_hash", String(64), nullable=False, comment="SHA-256 of the CSRF token"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("client", String(64), nullable=True, comment="address that signed in"),
    comment="Server-side sessions of signed-in people (cookie its_session).",
)

signin_links = Table(
    "signin_links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    comment="One-time sign-in links (/signin/<token>), as `its up` prints.",
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_id", String(32), nullable=False, unique=True, comment="public part of the key"),
    Column("secret_hash", String(64), nullable=False, comment="SHA-256 of the secret part"),
    Column("name", String(100), nullable=False),
    Column("scope", String(16), nullable=False, comment="read | operate"),
    Column("owner_id", ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    comment="API keys of programs (X-API-Key: <key_id>.<secret>).",
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(128), nullable=True, comment="username, key:<key_id>, or null"),
    Column("action", String(64), nullable=False, index=True),
    Column("target", String(200), nullable=True),
    Column("outcome", String(16), nullable=False, comment="ok | failed | denied"),
    Column("detail", JSON, nullable=True),
    Column("client", String(64), nullable=True, comment="client address"),
    comment="Security-relevant events: sign-in, failed sign-in, key use, acknowledgement, user "
    "and key changes.",
)


# --------------------------------------------------------------------------- roll-ups
# Per station and bucket, the *sums* the handbook's formulas need (docs/storage.md): every coarser
# bucket and every level is a sum of sums, and the formulas are applied once, at read time
# (its/service/traffic.py). Kept current by triggers on ``readings`` that log dirty 5-minute keys
# and by the roll-up worker (its/db/rollup.py) that recomputes them from the raw rows.


def _rollup_table(name: str, comment: str) -> Table:
    return Table(
        name,
        metadata,
        Column("station_id", String(64), nullable=False),
        Column("bucket_start", UTCDateTime, nullable=False),
        Column("flow_sum", Float, nullable=False, comment="sum of lane flows q (veh/h) over rows"),
        Column("intervals", Integer, nullable=False, comment="distinct interval starts seen"),
        Column("lane_rows", Integer, nullable=False, comment="lane intervals seen"),
        Column("period_s", SmallInteger, nullable=False, comment="longest period seen"),
        Column("occ_sum", Float, nullable=False, comment="sum of lane occupancies"),
        Column("occ_n", Integer, nullable=False, comment="lane rows with an occupancy"),
        Column("q_speed", Float, nullable=False, comment="sum of q over lanes with a speed"),
        Column("qv_measured", Float, nullable=False, comment="sum of q / v, measured speeds"),
        Column(
            "occ_est",
            Float,
            nullable=False,
            comment="sum of occupancy over single-loop lanes (q / v = occ 1000 / g)",
        ),
        Column("last_start", UTCDateTime, nullable=False, comment="newest interval start"),
        PrimaryKeyConstraint("station_id", "bucket_start", name=f"pk_{name}"),
        Index(f"ix_{name}_bucket_start", "bucket_start"),
        comment=comment,
    )


rollup_5m = _rollup_table("rollup_5m", "Per station and 5-minute bucket (UTC-aligned): sums.")
rollup_1h = _rollup_table("rollup_1h", "Per station and local hour of the network's zone: sums.")
rollup_1d = _rollup_table("rollup_1d", "Per station and local day of the network's zone: sums.")


def _target_rollup_table(name: str, comment: str) -> Table:
    return Table(
        name,
        metadata,
        Column("target_id", String(64), nullable=False),
        Column("bucket_start", UTCDateTime, nullable=False),
        Column("flow", Float, nullable=False, comment="sum of station flows (veh/h)"),
        Column("stations", Integer, nullable=False, comment="stations reporting"),
        Column("q_speed", Float, nullable=False, comment="sum of stations' mean q with a speed"),
        Column("q_over_v", Float, nullable=False, comment="sum of stations' mean q / v"),
        Column("occ_sum", Float, nullable=False),
        Column("occ_n", Integer, nullable=False),
        Column("lane_rows", Integer, nullable=False, comment="lane intervals seen"),
        Column("expected_own", Float, nullable=False, comment="lane intervals expected, reporting"),
        Column("lanes_reporting", Integer, nullable=False, comment="lanes of reporting stations"),
        PrimaryKeyConstraint("target_id", "bucket_start", name=f"pk_{name}"),
        Index(f"ix_{name}_bucket_start", "bucket_start"),
        comment=comment,
    )


rollup_segment_5m = _target_rollup_table(
    "rollup_segment_5m", "Per segment and 5-minute bucket: its stations' sums (network-dependent)."
)
rollup_corridor_5m = _target_rollup_table(
    "rollup_corridor_5m",
    "Per corridor and 5-minute bucket: its stations' sums (network-dependent).",
)

rollup_dirty = Table(
    "rollup_dirty",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("station_id", String(64), nullable=False),
    Column("bucket_start", UTCDateTime, nullable=False, comment="5-minute bucket to recompute"),
    Column("marked_at", UTCDateTime, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
    # (bucket, station): SQLite's trigger looks a key up before logging it; on the bucket alone
    # that scanned every station's key of the bucket per row (1,000 rows/s at 2,000 stations)
    Index("ix_rollup_dirty_bucket_start_station_id", "bucket_start", "station_id"),
    comment="Log of (station, 5-min bucket) keys whose raw readings changed (written by triggers "
    "on readings); the roll-up worker recomputes and deletes them.",
)

# --------------------------------------------------------------------------- retention

retention_state = Table(
    "retention_state",
    metadata,
    Column("name", String(32), primary_key=True, comment="what is cleaned: readings"),
    Column(
        "horizon",
        UTCDateTime,
        nullable=False,
        comment="raw rows before this may have been deleted: only the roll-ups answer there",
    ),
    Column("updated_at", UTCDateTime, nullable=False),
    comment="How far the raw-data clean-up has reached (its/db/retention.py); it only moves on.",
)
