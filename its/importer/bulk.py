"""Writing a batch of readings the fast way each backend offers, exactly once.

- PostgreSQL: binary ``COPY`` (psycopg 3) into a temporary staging table, then one
  ``INSERT INTO readings ... SELECT ... ON CONFLICT DO NOTHING``. COPY alone cannot skip the
  rows an earlier run stored; going through the staging table keeps COPY's speed and the reading
  key's exactly-once. The one ``INSERT`` is one statement for the roll-up trigger, which logs
  the touched (station, 5-minute) keys once per batch, and skipped duplicates log nothing.
- SQLite: one ``executemany`` of ``INSERT OR IGNORE`` per transaction (SQLite's fast path: the
  statement is prepared once, and the whole batch is one commit).

Rows are the dicts :func:`its.db.writes.reading_rows` builds; the caller's transaction commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from its.db import schema

COLUMNS = (
    "station_id",
    "lane",
    "interval_start",
    "period_s",
    "count",
    "occupancy",
    "speed_kph",
    "status",
    "received_at",
)
_PG_TYPES = (
    "text",
    "int2",
    "timestamptz",
    "int2",
    "int4",
    "float8",
    "float8",
    "text",
    "timestamptz",
)
STAGE = "its_import_stage"
_COLS = ", ".join(f'"{c}"' for c in COLUMNS)


def write_readings(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Store ``rows``, ignoring those whose reading key is stored already (or repeated in the
    batch: the first wins); returns how many were stored."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        return _copy_postgresql(conn, rows)
    if conn.dialect.name == "sqlite":
        return _executemany_sqlite(conn, rows)
    raise NotImplementedError(conn.dialect.name)


def _copy_postgresql(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    dbapi = conn.connection.driver_connection
    with dbapi.cursor() as cur:
        # per session; ON COMMIT DELETE ROWS empties it with every batch's commit
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (station_id text, lane int2, "
            "interval_start timestamptz, period_s int2, count int4, occupancy float8, "
            "speed_kph float8, status text, received_at timestamptz) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY {STAGE} ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(_PG_TYPES))
            for r in rows:
                copy.write_row(tuple(r[c] for c in COLUMNS))
        cur.execute(
            f"INSERT INTO readings ({_COLS}) SELECT {_COLS} FROM {STAGE} ON CONFLICT DO NOTHING"
        )
        stored = cur.rowcount
        cur.execute(f"TRUNCATE {STAGE}")  # a caller writing two batches in one transaction
    return max(stored, 0)


def _executemany_sqlite(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    dialect = conn.dialect
    column_type = schema.readings.c.interval_start.type
    convert = column_type.dialect_impl(dialect).bind_processor(dialect)  # SQLAlchemy's text form
    assert convert is not None  # UTCDateTime always converts on SQLite
    cache: dict[Any, str] = {}  # a batch holds few distinct times: each lane, station, row

    def stamp(value: Any) -> str:
        text = cache.get(value)
        if text is None:
            text = cache[value] = convert(value)
        return text

    values = [
        (
            r["station_id"],
            r["lane"],
            stamp(r["interval_start"]),
            r["period_s"],
            r["count"],
            r["occupancy"],
            r["speed_kph"],
            r["status"],
            stamp(r["received_at"]),
        )
        for r in rows
    ]
    dbapi = conn.connection.driver_connection
    cur = dbapi.cursor()
    try:
        cur.executemany(
            f"INSERT OR IGNORE INTO readings ({_COLS}) VALUES ({', '.join('?' * len(COLUMNS))})",
            values,
        )
        return max(cur.rowcount, 0)
    finally:
        cur.close()
