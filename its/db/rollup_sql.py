"""DDL that keeps the roll-ups' dirty-key log current: triggers on ``readings`` per backend.

Every path that writes ``readings`` (ingest, an import, a bulk ``INSERT ... SELECT`` or ``COPY``
by an analyst) fires them, so no writer has to remember the roll-ups. They only *log* which
(station, 5-minute bucket) keys changed; the roll-up worker (:mod:`its.db.rollup`) recomputes those
buckets from the raw rows. Deletes are not logged: retention removes raw rows and keeps roll-ups.

- PostgreSQL: statement-level ``AFTER INSERT`` / ``AFTER UPDATE`` triggers with a transition
  table, one ``INSERT ... SELECT DISTINCT`` per statement. Rows that ``ON CONFLICT DO NOTHING``
  skipped are not in the transition table, so a duplicate logs nothing. The log is append-only
  (no unique key): writers never wait for each other or for the worker, and the worker claims
  rows with ``FOR UPDATE SKIP LOCKED``.
- TimescaleDB 2.16 and later: the same statement-level triggers (hypertables support transition
  tables since 2.16). Older TimescaleDB has no transition tables on hypertables, so there the
  same log is written by a row-level trigger (one log row per reading written).
- SQLite: row-level triggers that add a key only when it is not logged yet (writers are
  serialised, so the check cannot race).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from its.db.timebucket import _ORIGIN_EPOCH

ROLLUP_WIDTH_S = 300

_PG_BUCKET = "date_bin(INTERVAL '5 minutes', {ts}, TIMESTAMPTZ '2000-01-03')"
_SQLITE_BUCKET = (
    "(datetime((CAST(strftime('%s', {ts}) AS INTEGER) - " + str(_ORIGIN_EPOCH) + ") / "
    f"{ROLLUP_WIDTH_S} * {ROLLUP_WIDTH_S} + " + str(_ORIGIN_EPOCH) + ", 'unixepoch') || '.000000')"
)

_PG_STATEMENT_FN = f"""
CREATE OR REPLACE FUNCTION its_rollup_log_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (station_id, bucket_start)
    SELECT DISTINCT station_id, {_PG_BUCKET.format(ts="interval_start")} FROM its_new_rows;
    RETURN NULL;
END $$
"""

_PG_ROW_FN = f"""
CREATE OR REPLACE FUNCTION its_rollup_log_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (station_id, bucket_start)
    VALUES (NEW.station_id, {_PG_BUCKET.format(ts="NEW.interval_start")});
    RETURN NULL;
END $$
"""


def _sqlite_trigger(name: str, event: str) -> str:
    bucket = _SQLITE_BUCKET.format(ts="NEW.interval_start")
    return f"""
CREATE TRIGGER {name} AFTER {event} ON readings
BEGIN
    INSERT INTO rollup_dirty (station_id, bucket_start)
    SELECT NEW.station_id, {bucket}
    WHERE NOT EXISTS (
        SELECT 1 FROM rollup_dirty
        WHERE station_id = NEW.station_id AND bucket_start = {bucket}
    );
END
"""


def is_timescaledb(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    return bool(
        conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first()
    )


def transition_tables_supported(conn: Connection) -> bool:
    """Whether statement triggers with transition tables work on ``readings``: plain
    PostgreSQL, and TimescaleDB from 2.16 on."""
    if not is_timescaledb(conn):
        return True
    version = conn.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    ).scalar_one()
    major, minor = (int(p) for p in version.split("-")[0].split(".")[:2])
    return (major, minor) >= (2, 16)


def uses_row_triggers(conn: Connection) -> bool:
    """Whether ``readings`` logs keys with the row-level trigger (made on an older TimescaleDB)."""
    return bool(
        conn.execute(
            text(
                "SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
                "WHERE t.tgrelid = to_regclass('readings') AND p.proname = 'its_rollup_log_row'"
            )
        ).first()
    )


def create_triggers(conn: Connection) -> None:
    """Install the dirty-key triggers on ``readings`` for this backend."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(_sqlite_trigger("its_rollup_log_insert", "INSERT"))
        conn.exec_driver_sql(_sqlite_trigger("its_rollup_log_update", "UPDATE"))
        return
    if not transition_tables_supported(conn):
        conn.exec_driver_sql(_PG_ROW_FN)
        for event in ("INSERT", "UPDATE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER its_rollup_log_{event.lower()} AFTER {event} ON readings "
                "FOR EACH ROW EXECUTE FUNCTION its_rollup_log_row()"
            )
        return
    conn.exec_driver_sql(_PG_STATEMENT_FN)
    for event in ("INSERT", "UPDATE"):
        conn.exec_driver_sql(
            f"CREATE TRIGGER its_rollup_log_{event.lower()} AFTER {event} ON readings "
            "REFERENCING NEW TABLE AS its_new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION its_rollup_log_statement()"
        )


def drop_triggers(conn: Connection) -> None:
    for event in ("insert", "update"):
        conn.exec_driver_sql(
            f"DROP TRIGGER IF EXISTS its_rollup_log_{event}"
            + ("" if conn.dialect.name == "sqlite" else " ON readings")
        )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS its_rollup_log_statement()")
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS its_rollup_log_row()")


def log_all_readings(conn: Connection) -> None:
    """Log every key that has readings, so the worker builds roll-ups for existing history."""
    bucket = (_SQLITE_BUCKET if conn.dialect.name == "sqlite" else _PG_BUCKET).format(
        ts="interval_start"
    )
    conn.exec_driver_sql(
        f"INSERT INTO rollup_dirty (station_id, bucket_start) "
        f"SELECT DISTINCT station_id, {bucket} FROM readings"
    )
