"""The TimescaleDB path, taken only where the extension exists (detected at run time).

Written from TimescaleDB's documentation (2.13+ ``create_hypertable`` with ``by_range``, and the
compression settings and policies that 2.18+ also calls the columnstore). Plain PostgreSQL and
SQLite skip all of it and answer the same queries from plain tables.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

CHUNK_INTERVAL = "1 day"
COMPRESS_AFTER = "7 days"


def timescale_available(conn: Connection) -> bool:
    """True where TimescaleDB is installed in this database, or can be (packaged and preloaded)."""
    if conn.dialect.name != "postgresql":
        return False
    if conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first():
        return True
    packaged = conn.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).first()
    if not packaged:
        return False
    # Preloaded means TimescaleDB's loader runs in every backend, and it defines this setting.
    # (shared_preload_libraries itself is readable only by superusers and pg_read_all_settings,
    # so reading it would fail the migration for an ordinary application role.)
    loader = conn.execute(text("SELECT current_setting('timescaledb.disable_load', true)")).scalar()
    return loader == "off"


def make_readings_hypertable(conn: Connection) -> bool:
    """Turn ``readings`` into a compressed hypertable where TimescaleDB is available.

    Indexes are declared in the schema (``create_default_indexes => false``) so that every backend
    has the same ones and ``alembic check`` sees no drift. Returns whether it did.
    """
    if not timescale_available(conn):
        return False
    conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    conn.execute(
        text(
            "SELECT create_hypertable('readings', by_range('interval_start', "
            f"INTERVAL '{CHUNK_INTERVAL}'), create_default_indexes => false, "
            "if_not_exists => true)"
        )
    )
    conn.execute(
        text(
            "ALTER TABLE readings SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'station_id', "
            "timescaledb.compress_orderby = 'lane, interval_start DESC')"
        )
    )
    conn.execute(
        text(
            f"SELECT add_compression_policy('readings', INTERVAL '{COMPRESS_AFTER}', "
            "if_not_exists => true)"
        )
    )
    return True


def is_hypertable(conn: Connection, table: str = "readings") -> bool:
    if conn.dialect.name != "postgresql":
        return False
    if not conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first():
        return False
    return bool(
        conn.execute(
            text("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = :t"),
            {"t": table},
        ).first()
    )
