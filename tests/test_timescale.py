"""The TimescaleDB path: hypertable, compression, policy, no drift, and the same answers.

Runs only where ``ITS_TEST_TIMESCALE_URL`` names a TimescaleDB server (an admin URL, as
``ITS_TEST_DATABASE_URL`` does for PostgreSQL); see docs/timescaledb.md. Each run creates its own
database, lets the migration create the extension, and drops the database afterwards. The answers
are checked against the Python reference of tests/test_timebucket.py and against plain
PostgreSQL and SQLite on the same rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine, make_url

from its.db import migrate, schema
from its.db.engine import Backend, detect_backend, make_engine
from its.db.timebucket import time_bucket
from its.db.timescale import is_hypertable
from its.db.writes import insert_readings
from its.network import Network
from tests.test_timebucket import _buckets, _expected, _seed

TS_ADMIN_URL = os.environ.get("ITS_TEST_TIMESCALE_URL", "")

pytestmark = pytest.mark.skipif(
    not TS_ADMIN_URL,
    reason="TimescaleDB is not packaged here; set ITS_TEST_TIMESCALE_URL (see docs/timescaledb.md)",
)

WIDTHS = [timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1), timedelta(days=1)]
ZONES = [None, "Asia/Jakarta", "America/New_York"]


def _create_database(admin: Engine) -> str:
    """A new database without the extension: template0, because the official Docker image
    installs TimescaleDB into template1, and the migration is what should create it."""
    name = f"its_tsdb_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    return make_url(TS_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _drop_database(admin: Engine, url: str) -> None:
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def ts_admin() -> Iterator[Engine]:
    admin = make_engine(TS_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        available = conn.execute(
            text("SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'")
        ).scalar()
    if available is None:
        pytest.fail(f"{TS_ADMIN_URL} is not a TimescaleDB server (no timescaledb extension)")
    yield admin
    admin.dispose()


@pytest.fixture(scope="module")
def ts_engine_module(ts_admin: Engine, network: Network) -> Iterator[Engine]:
    """A fresh database, migrated (which creates the extension) and seeded with the network."""
    url = _create_database(ts_admin)
    engine = make_engine(url)
    try:
        assert detect_backend(engine) == Backend.POSTGRESQL  # no extension before the migration
        migrate.upgrade_and_seed(engine, network)
        yield engine
    finally:
        engine.dispose()
        _drop_database(ts_admin, url)


@pytest.fixture
def ts_engine(ts_engine_module: Engine) -> Engine:
    """The TimescaleDB database with the network and no readings."""
    with ts_engine_module.begin() as conn:
        for table in (schema.readings, schema.station_status, schema.dead_letters):
            conn.execute(table.delete())
    return ts_engine_module


def _rows(conn: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(text(sql), params)]


# --------------------------------------------------------------------------- schema


def test_detected_once_per_engine(ts_engine: Engine) -> None:
    assert detect_backend(ts_engine) == Backend.TIMESCALEDB
    fresh = make_engine(ts_engine.url.render_as_string(hide_password=False))
    try:
        assert fresh.dialect.its_backend == Backend.TIMESCALEDB  # type: ignore[attr-defined]
    finally:
        fresh.dispose()
    with ts_engine.connect() as conn:
        assert conn.execute(
            text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        ).scalar()


def test_readings_is_a_hypertable_on_interval_start(ts_engine: Engine) -> None:
    with ts_engine.connect() as conn:
        assert is_hypertable(conn)
        assert _rows(
            conn,
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'readings'",
        ) == [("interval_start", timedelta(days=1))]
        # Only readings: the other tables stay plain.
        assert _rows(conn, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [
            ("readings",)
        ]


def test_readings_has_only_the_schema_indexes(ts_engine: Engine) -> None:
    """create_default_indexes => false: no extra index beside the ones the schema declares."""
    with ts_engine.connect() as conn:
        names = _rows(
            conn, "SELECT indexname FROM pg_indexes WHERE tablename = 'readings' ORDER BY 1"
        )
    assert names == [("ix_readings_interval_start",), ("pk_readings",)]


def test_compression_settings(ts_engine: Engine) -> None:
    with ts_engine.connect() as conn:
        assert _rows(
            conn,
            "SELECT compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'readings'",
        ) == [(True,)]
        settings = _rows(
            conn,
            "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
            "FROM timescaledb_information.compression_settings "
            "WHERE hypertable_name = 'readings' ORDER BY attname",
        )
    assert settings == [
        ("interval_start", None, 2, False),
        ("lane", None, 1, True),
        ("station_id", 1, None, None),
    ]


def test_compression_policy(ts_engine: Engine) -> None:
    with ts_engine.connect() as conn:
        jobs = _rows(
            conn,
            "SELECT proc_name, config->>'compress_after' FROM timescaledb_information.jobs "
            "WHERE hypertable_name = 'readings'",
        )
    assert jobs == [("policy_compression", "7 days")]


def test_models_and_migrations_agree(ts_engine: Engine) -> None:
    migrate.check(ts_engine)  # raises AutogenerateDiffsDetected on drift
    assert migrate.current_revision(ts_engine) == "0001"


def test_downgrade_and_upgrade_again(ts_admin: Engine, network: Network) -> None:
    """The hypertable drops with its table and comes back on the next upgrade."""
    url = _create_database(ts_admin)
    engine = make_engine(url)
    try:
        migrate.upgrade_and_seed(engine, network)
        migrate.downgrade(engine, "base")
        with engine.connect() as conn:
            assert not is_hypertable(conn)
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert is_hypertable(conn)
        migrate.check(engine)
    finally:
        engine.dispose()
        _drop_database(ts_admin, url)


# --------------------------------------------------------------------------- time_bucket


def test_time_bucket_compiles_to_timescaledb(ts_engine: Engine, pg_engine: Engine) -> None:
    b = time_bucket(timedelta(minutes=5), schema.readings.c.interval_start, "Asia/Jakarta")
    ts_sql = str(select(b).compile(dialect=ts_engine.dialect))
    pg_sql = str(select(b).compile(dialect=pg_engine.dialect))
    assert "time_bucket(CAST(" in ts_sql and "date_bin" not in ts_sql
    assert "date_bin" in pg_sql and "time_bucket(" not in pg_sql
    assert "5 minutes" not in ts_sql and "Asia/Jakarta" not in ts_sql  # bound, never inlined
    assert isinstance(ts_engine.dialect, postgresql.dialect)


@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"{int(w.total_seconds())}s")
@pytest.mark.parametrize("tz", ZONES, ids=lambda z: z or "UTC")
def test_buckets_match_reference_and_other_backends(
    ts_engine: Engine,
    pg_engine: Engine,
    sqlite_engine: Engine,
    width: timedelta,
    tz: str | None,
) -> None:
    for engine in (ts_engine, pg_engine, sqlite_engine):
        _seed(engine)
    expected = _expected(width, tz)
    assert _buckets(ts_engine, width, tz) == expected
    assert _buckets(pg_engine, width, tz) == expected
    assert _buckets(sqlite_engine, width, tz) == expected


def test_width_change_is_not_cached(ts_engine: Engine) -> None:
    _seed(ts_engine)
    five = _buckets(ts_engine, timedelta(minutes=5), None)
    hour = _buckets(ts_engine, timedelta(hours=1), None)
    assert len(five) > len(hour)
    assert _buckets(ts_engine, timedelta(minutes=5), None) == five
    jakarta = _buckets(ts_engine, timedelta(days=1), "Asia/Jakarta")
    assert _buckets(ts_engine, timedelta(days=1), "America/New_York") != jakarta


def test_dst_days_in_new_york_are_local_days(ts_engine: Engine) -> None:
    _seed(ts_engine)
    days = [b for b, _ in _buckets(ts_engine, timedelta(days=1), "America/New_York")]
    assert datetime(2026, 3, 8, 5, tzinfo=UTC) in days  # 00:00 EST
    assert datetime(2026, 3, 9, 4, tzinfo=UTC) in days  # 00:00 EDT


def _compress_all(engine: Engine) -> int:
    with engine.begin() as conn:
        chunks = conn.execute(
            text(
                "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('readings') c"
            )
        ).all()
        compressed = conn.execute(
            text(
                "SELECT count(*) FROM timescaledb_information.chunks "
                "WHERE hypertable_name = 'readings' AND is_compressed"
            )
        ).scalar()
    assert compressed == len(chunks) > 0
    return len(chunks)


def test_compressed_chunks_give_the_same_buckets(ts_engine: Engine) -> None:
    _seed(ts_engine)
    _compress_all(ts_engine)
    for width in WIDTHS:
        for tz in ZONES:
            assert _buckets(ts_engine, width, tz) == _expected(width, tz), (width, tz)


# --------------------------------------------------------------------------- writes


def _reading(station: str, lane: int, at: datetime, count: int) -> dict[str, Any]:
    return {
        "station_id": station,
        "lane": lane,
        "interval_start": at,
        "period_s": 30,
        "count": count,
        "occupancy": 0.1,
        "speed_kph": 42.0,
        "status": "ok",
        "received_at": at + timedelta(seconds=31),
    }


def _counts(engine: Engine) -> list[tuple[str, int, datetime, int]]:
    r = schema.readings.c
    q = select(r.station_id, r.lane, r.interval_start, r["count"]).order_by(
        r.station_id, r.lane, r.interval_start
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(q)]  # type: ignore[misc]


T1 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
FIRST = [
    _reading(f"JKT-SDR-N-00{s}", lane, T1 + timedelta(seconds=30 * i), i)
    for s in (1, 2)
    for lane in (1, 2)
    for i in range(20)
]


def _insert(engine: Engine, rows: list[dict[str, Any]]) -> int:
    """Insert through ``insert_readings``; returns the rows actually added (counted, not the
    function's own figure: see test_insert_readings_reports_rows_inserted)."""
    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(schema.readings)).scalar_one()
    with engine.begin() as conn:
        insert_readings(conn, rows)
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.readings)).scalar_one() - before


def test_duplicate_readings_are_ignored(ts_engine: Engine, pg_engine: Engine) -> None:
    late = _reading("JKT-SDR-N-001", 1, T1 - timedelta(minutes=5), 7)
    resent = [dict(r, count=999) for r in FIRST[:10]]
    for engine in (ts_engine, pg_engine):
        assert _insert(engine, FIRST) == len(FIRST)
        # resent readings, a duplicate inside one batch, and one new (late) reading
        assert _insert(engine, [*resent, resent[0], late]) == 1
        assert _insert(engine, FIRST) == 0
    assert _counts(ts_engine) == _counts(pg_engine)
    assert len(_counts(ts_engine)) == len(FIRST) + 1
    assert 999 not in {c for *_, c in _counts(ts_engine)}  # the first copy is kept


def test_duplicates_into_compressed_chunks_are_ignored(ts_engine: Engine) -> None:
    """After the compression policy has run, a resent reading is still ignored and a late one
    still accepted."""
    _insert(ts_engine, FIRST)
    _compress_all(ts_engine)
    before = _counts(ts_engine)
    late = _reading("JKT-SDR-N-002", 2, T1 + timedelta(hours=1), 5)  # same (compressed) chunk
    assert _insert(ts_engine, [dict(r, count=999) for r in FIRST[:15]]) == 0
    assert _insert(ts_engine, [late]) == 1
    after = _counts(ts_engine)
    assert after == sorted([*before, ("JKT-SDR-N-002", 2, late["interval_start"], 5)])
    with ts_engine.connect() as conn:
        total = conn.execute(select(func.sum(schema.readings.c["count"]))).scalar()
    assert total == sum(r["count"] for r in FIRST) + 5


def test_insert_readings_reports_rows_inserted(ts_engine: Engine, pg_engine: Engine) -> None:
    for engine in (ts_engine, pg_engine):
        with engine.begin() as conn:
            assert insert_readings(conn, FIRST) == len(FIRST)
            assert insert_readings(conn, FIRST) == 0
