"""The TimescaleDB path: hypertable, compression, policy, no drift, and the same answers.

Runs only where ``ITS_TEST_TIMESCALE_URL`` names a TimescaleDB server (an admin URL, as
``ITS_TEST_DATABASE_URL`` does for PostgreSQL); see docs/timescaledb.md. Each run creates its own
database, lets the migration create the extension, and drops the database afterwards. The answers
are checked against the Python reference of tests/test_timebucket.py and against plain
PostgreSQL and SQLite on the same rows.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine, make_url

from its.contract import iso
from its.db import caggs, migrate, rollup, rollup_sql, schema
from its.db.engine import Backend, detect_backend, make_engine
from its.db.timebucket import time_bucket
from its.db.timescale import is_hypertable
from its.db.writes import insert_readings
from its.network import Network, Station
from its.service import live, traffic
from tests.test_timebucket import _buckets, _expected, _seed
from tests.traffic_helpers import seed

TS_ADMIN_URL = os.environ.get("ITS_TEST_TIMESCALE_URL", "")

pytestmark = pytest.mark.skipif(
    not TS_ADMIN_URL,
    reason="TimescaleDB is not packaged here; set ITS_TEST_TIMESCALE_URL (see docs/timescaledb.md)",
)

WIDTHS = [timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1), timedelta(days=1)]
ZONES = [None, "Asia/Jakarta", "America/New_York"]
NETWORK_TABLES = ("corridors", "segments", "stations")


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
        assert caggs.setup(engine, network.timezone)  # what `its db upgrade` does next
        yield engine
    finally:
        engine.dispose()
        _drop_database(ts_admin, url)


@pytest.fixture
def ts_engine(ts_engine_module: Engine, network: Network) -> Engine:
    """The TimescaleDB database with the network and nothing else (no readings, no alerts, empty
    continuous aggregates with their policies, no retention policy)."""
    with ts_engine_module.begin() as conn:
        caggs.drop(conn)
        for table in reversed(schema.metadata.sorted_tables):
            if table.name not in NETWORK_TABLES:
                conn.execute(table.delete())
        caggs.create(conn, network.timezone)
        caggs.set_retention(conn, 0)
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
    head = ScriptDirectory(str(migrate.MIGRATIONS_DIR)).get_current_head()
    assert head is not None and migrate.current_revision(ts_engine) == head


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


# --------------------------------------------------------------------------- service layer

# Two hours of readings in two windows on 2026-11-02/03 (UTC). The first crosses local midnight in
# Jakarta (17:00 UTC), so daily buckets split by the network's zone; the second crosses UTC
# midnight, so the rows fall into two 1-day chunks on TimescaleDB.
SVC_WINDOWS = [datetime(2026, 11, 2, 16, 30, tzinfo=UTC), datetime(2026, 11, 2, 23, 30, tzinfo=UTC)]
SVC_MINUTES = 60
SVC_START, SVC_END = SVC_WINDOWS[0], SVC_WINDOWS[-1] + timedelta(minutes=SVC_MINUTES)
SVC_LEVELS = ("station", "segment", "corridor")
SVC_BUCKETS = (300, 900, 3600, 86400)
BANDS = (0.12, 0.3, 0.5, 0.7, 0.92)  # fractions of free flow: jammed ... free


def _crc(s: str) -> int:
    """A stable hash (``hash(str)`` changes between processes)."""
    return zlib.crc32(s.encode())


def _service_speed(network: Network) -> Callable[[Station, datetime], float | None]:
    """A deterministic field with every case the service layer handles: a whole silent segment
    (no-data), silent stations (lower % observed), gaps, segments that stop before the end (stale)
    and speeds from jammed to free. Speeds are not round numbers, so no rounded figure lands on a
    tie that the order of summation could tip either way."""
    silent_segment = network.segments[1].segment_id

    def speed(st: Station, t: datetime) -> float | None:
        seg = network.segment(st.segment_id)
        n = int((t - SVC_START).total_seconds() // 30)
        if seg.segment_id == silent_segment or _crc(st.station_id) % 11 == 0:
            return None
        if _crc(st.station_id) % 3 == 0 and n % 7 == 0:
            return None
        if _crc(seg.segment_id) % 7 == 0 and t >= SVC_END - timedelta(minutes=10):
            return None
        band = BANDS[_crc(seg.segment_id) % len(BANDS)]
        jitter = 1 + (_crc(st.station_id) % 997) / 9973 + (n % 13) / 1013
        return seg.free_flow_kph * band * jitter

    return speed


def _seed_service(engine: Engine, network: Network) -> None:
    """The same readings on every backend; two groups of stations with different counts."""
    speed = _service_speed(network)
    groups = (network.stations[0::2], network.stations[1::2])
    for start in SVC_WINDOWS:
        for group, count in zip(groups, (10, 17), strict=True):
            seed(engine, network, start, SVC_MINUTES, speed, stations=group, count=count)


def _service_answers(engine: Engine, network: Network) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    with engine.connect() as conn:
        for level in SVC_LEVELS:
            for bucket_s in SVC_BUCKETS:
                out[(level, bucket_s)] = traffic.aggregate(
                    conn, network, level, SVC_START, SVC_END, bucket_s
                )
        # network_state's unrounded input: each segment in the newest complete 5-minute bucket
        clock = traffic.data_clock(conn)
        assert clock is not None
        out["window"] = sorted(
            live.live_segments(conn, network, clock).values(),
            key=lambda i: i.target_id,
        )
        out["network_state"] = live.network_state(conn, network)
    return out


def _same_intervals(a: list[traffic.Interval], b: list[traffic.Interval], what: Any) -> None:
    """Same targets and buckets in the same order; the figures equal up to float summation order
    (the backends add the same terms in a different order)."""
    assert [(i.target_id, i.bucket_start) for i in a] == [
        (i.target_id, i.bucket_start) for i in b
    ], what
    for x, y in zip(a, b, strict=True):
        for field in ("speed_kph", "flow_vph", "occupancy", "pct_observed"):
            u, v = getattr(x, field), getattr(y, field)
            assert (u is None) == (v is None), (what, x, y)
            if u is not None:
                assert math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12), (what, field, x, y)


# The live map's rounded figures and the unit of their last digit (its.service.live).
ROUNDED = {"speed_kph": 0.1, "flow_vph": 0.1, "occupancy": 1e-4, "pct_observed": 0.1, "tti": 0.01}


def _same_network_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """The live map is the same: data time, features, geometry, bands, staleness and observation
    times identical; rounded figures equal to their last digit. That digit may differ by one: the
    wire carries occupancy to 4 decimals, so a mean over lanes often lands exactly on a rounding
    tie (e.g. 0.53645) that float summation order tips either way, on any backend. The unrounded
    figures behind the map are compared strictly (the "window" answers)."""
    assert a["data_time"] == b["data_time"]
    assert [f["id"] for f in a["features"]] == [f["id"] for f in b["features"]]
    for fa, fb in zip(a["features"], b["features"], strict=True):
        assert fa["geometry"] == fb["geometry"]
        pa, pb = fa["properties"], fb["properties"]
        assert pa.keys() == pb.keys()
        assert {k: v for k, v in pa.items() if k not in ROUNDED} == {
            k: v for k, v in pb.items() if k not in ROUNDED
        }, fa["id"]
        for key, unit in ROUNDED.items():
            assert (pa[key] is None) == (pb[key] is None), (fa["id"], key)
            if pa[key] is not None:
                assert abs(pa[key] - pb[key]) <= 1.5 * unit, (fa["id"], key, pa[key], pb[key])


def test_service_layer_agrees_with_postgresql_and_sqlite(
    ts_engine: Engine, pg_engine: Engine, sqlite_engine: Engine, network: Network
) -> None:
    """traffic.aggregate at every level and bucket, and live.network_state, give the same answers
    on TimescaleDB (also after compression), plain PostgreSQL and SQLite."""
    assert detect_backend(ts_engine) == Backend.TIMESCALEDB
    assert detect_backend(pg_engine) == Backend.POSTGRESQL
    for engine in (ts_engine, pg_engine, sqlite_engine):
        _seed_service(engine, network)
    assert _counts(ts_engine) == _counts(pg_engine) == _counts(sqlite_engine)

    ts, pg, lite = (_service_answers(e, network) for e in (ts_engine, pg_engine, sqlite_engine))
    for key in ts:
        if key == "network_state":
            _same_network_state(ts[key], pg[key])
            _same_network_state(ts[key], lite[key])
        else:
            _same_intervals(ts[key], pg[key], ("postgresql", key))
            _same_intervals(ts[key], lite[key], ("sqlite", key))

    # The comparison covers what it claims to: every level and case is present in the answers.
    reporting = {r.target_id for r in ts[("station", 300)]}
    assert 0 < len(reporting) < len(network.stations)
    assert len({r.target_id for r in ts[("corridor", 900)]}) == len(
        {s.corridor_id for s in network.segments}
    )
    assert {r.bucket_start for r in ts[("segment", 86400)]} == {
        datetime(2026, 11, 1, 17, tzinfo=UTC),  # local days in Jakarta, not UTC days
        datetime(2026, 11, 2, 17, tzinfo=UTC),
    }
    assert any(r.pct_observed < 100 for r in ts[("segment", 300)])
    props = [f["properties"] for f in ts["network_state"]["features"]]
    assert ts["network_state"]["data_time"] == iso(SVC_END)
    assert {p["band"] for p in props} >= {"jammed", "free", "no-data"}
    assert {p["stale"] for p in props} == {True, False}

    # Compressed chunks (the 7-day policy's result) answer the same; the rows span two chunks.
    with ts_engine.connect() as conn:
        assert conn.execute(text("SELECT count(DISTINCT tableoid) FROM readings")).scalar() == 2
    _compress_all(ts_engine)
    compressed = _service_answers(ts_engine, network)
    for key in ts:
        if key == "network_state":
            _same_network_state(compressed[key], ts[key])
        else:
            _same_intervals(compressed[key], ts[key], ("compressed", key))


# --------------------------------------------------------------------------- roll-ups


def test_rollups_on_timescaledb(ts_engine: Engine, pg_engine: Engine, network: Network) -> None:
    """The statement-level dirty-key trigger (transition tables work on hypertables since 2.16)
    logs writes, the worker refreshes the continuous aggregates, and the answers equal the raw
    path and plain PostgreSQL's (tests/test_rollups.py)."""
    from tests.test_rollups import _answers, _same
    from tests.test_rollups import _seed as seed_rollups

    for engine in (ts_engine, pg_engine):
        seed_rollups(engine, network)
        with engine.connect() as conn:
            assert rollup.pending(conn) > 0
        rollup.catch_up(engine, network.timezone)
    ts_rolled = _answers(ts_engine, network, "rollup")
    _same(ts_rolled, _answers(ts_engine, network, "raw"))
    _same(ts_rolled, _answers(pg_engine, network, "rollup"))
    # a duplicate logs nothing, a late reading is rolled up
    with ts_engine.begin() as conn:
        conn.execute(schema.rollup_dirty.delete())
    with ts_engine.begin() as conn:  # one statement (as an import or a bulk load writes)
        conn.execute(insert(schema.readings).values(FIRST))
    keys = {
        (r["station_id"], rollup.bucket_floor(r["interval_start"], rollup.FIVE_MIN, None))
        for r in FIRST
    }
    with ts_engine.connect() as conn:
        assert not rollup_sql.uses_row_triggers(conn)
        assert rollup.pending(conn) == len(keys) < len(FIRST)  # one log row per key, not per row
    rollup.catch_up(ts_engine, network.timezone)
    _insert(ts_engine, FIRST)
    with ts_engine.connect() as conn:
        assert rollup.pending(conn) == 0


def test_row_triggers_of_an_older_timescaledb_are_replaced(
    ts_engine: Engine, network: Network
) -> None:
    """A database migrated on TimescaleDB before 2.16 logs with a row trigger; setup swaps it
    for the statement trigger, which logs the same keys."""
    with ts_engine.begin() as conn:
        rollup_sql.drop_triggers(conn)
        conn.exec_driver_sql(rollup_sql._PG_ROW_FN)
        conn.exec_driver_sql(
            "CREATE TRIGGER its_rollup_log_insert AFTER INSERT ON readings "
            "FOR EACH ROW EXECUTE FUNCTION its_rollup_log_row()"
        )
        assert rollup_sql.uses_row_triggers(conn)
    _insert(ts_engine, FIRST)
    with ts_engine.connect() as conn:
        assert rollup.pending(conn) == len(FIRST)
    assert caggs.setup(ts_engine, network.timezone)
    with ts_engine.begin() as conn:
        assert not rollup_sql.uses_row_triggers(conn)
        conn.execute(schema.rollup_dirty.delete())
        conn.execute(schema.readings.delete())
    with ts_engine.begin() as conn:
        conn.execute(insert(schema.readings).values(FIRST))
    with ts_engine.connect() as conn:
        assert rollup.pending(conn) == 4


# --------------------------------------------------------------------------- continuous aggregates

ROLLUP_TABLES = {"readings_5m": schema.rollup_5m, "readings_1h": schema.rollup_1h}
ROLLUP_TABLES["readings_1d"] = schema.rollup_1d
INT_SUMS = ("intervals", "lane_rows", "occ_n", "period_s")


def _sums(engine: Engine, table: Any) -> dict[tuple[str, datetime], dict[str, Any]]:
    """Station roll-up rows by (station, bucket): a plain table's or a continuous aggregate's."""
    cols = (*rollup.SUM_COLUMNS, *rollup.MAX_COLUMNS)
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.station_id, table.c.bucket_start, *(table.c[c] for c in cols))
        )
        return {(r[0], r[1]): dict(zip(cols, r[2:], strict=True)) for r in rows}


def _same_sums(
    cagg: dict[Any, dict[str, Any]], plain: dict[Any, dict[str, Any]], what: str
) -> None:
    assert cagg.keys() == plain.keys(), what
    for key, row in cagg.items():
        for name, value in row.items():
            other = plain[key][name]
            if name in INT_SUMS or name == "last_start":
                assert value == other, (what, key, name)
            else:
                assert math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-12), (what, key, name)


def _views_equal_tables(ts: Engine, pg: Engine) -> None:
    for view, table in ROLLUP_TABLES.items():
        cagg = _sums(ts, caggs.metadata.tables[view])
        assert cagg, view
        _same_sums(cagg, _sums(pg, table), view)


RAG_START = datetime(2026, 11, 2, 20, 0, tzinfo=UTC)


def _ragged(network: Network, start: datetime, minutes: int) -> list[dict[str, Any]]:
    """Readings where lanes miss intervals independently (a station's lane rows are then not
    its intervals times its lanes), some without a speed, on stations of two and more lanes."""
    stations = [s for s in network.stations if s.lanes >= 2][:6]
    rows = []
    for st in stations:
        for i in range(minutes * 2):
            at = start + timedelta(seconds=30 * i)
            for lane in range(1, st.lanes + 1):
                h = _crc(f"{st.station_id}/{i}/{lane}")
                if h % 4 == 0:
                    continue  # this lane missed this interval
                row = _reading(st.station_id, lane, at, 3 + h % 17)
                row["occupancy"] = round((h % 500) / 1000, 4)
                row["speed_kph"] = None if h % 7 == 0 else 20.0 + h % 60
                rows.append(row)
    return rows


def _compress_caggs(engine: Engine) -> int:
    """Compress every chunk of the aggregates that have compression; returns how many."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "SELECT compress_chunk(c, if_not_compressed => true) FROM "
                "timescaledb_information.continuous_aggregates a, "
                "show_chunks(format('%I.%I', a.view_schema, a.view_name)::regclass) c "
                "WHERE a.compression_enabled"
            )
        )
        return conn.execute(
            text(
                "SELECT count(*) FROM timescaledb_information.chunks c "
                "JOIN timescaledb_information.continuous_aggregates a "
                "ON a.materialization_hypertable_name = c.hypertable_name WHERE c.is_compressed"
            )
        ).scalar_one()


def test_continuous_aggregates_are_hierarchical_and_real_time(ts_engine: Engine) -> None:
    with ts_engine.connect() as conn:
        assert caggs.in_use(conn)
        assert rollup.stored_levels(conn) == caggs.LEVELS
        assert caggs.zone(conn) == "Asia/Jakarta"
        info = _rows(
            conn,
            "SELECT view_name, materialized_only, compression_enabled, view_definition "
            "FROM timescaledb_information.continuous_aggregates ORDER BY view_name",
        )
    assert [(v, m, c) for v, m, c, _d in info] == [
        ("readings_1d", False, False),
        ("readings_1h", False, True),
        ("readings_5m", False, True),
    ]
    defs = {v: d for v, *_x, d in info}
    assert "FROM readings_1h" in defs["readings_1d"] and "'1 day'" in defs["readings_1d"]
    assert "FROM readings_5m" in defs["readings_1h"] and "Asia/Jakarta" in defs["readings_1h"]
    assert "FROM readings" in defs["readings_5m"]
    assert "count(DISTINCT readings.interval_start)" in defs["readings_5m"]


def test_policies_exist(ts_engine: Engine, network: Network) -> None:
    with ts_engine.begin() as conn:
        caggs.set_retention(conn, 90)
    with ts_engine.connect() as conn:
        jobs = _rows(
            conn,
            "SELECT coalesce(c.view_name, j.hypertable_name), j.proc_name, "
            "j.config->>'start_offset', j.config->>'end_offset', j.schedule_interval, "
            "coalesce(j.config->>'compress_after', j.config->>'drop_after') "
            "FROM timescaledb_information.jobs j "
            "LEFT JOIN timescaledb_information.continuous_aggregates c "
            "ON j.hypertable_name IN (c.view_name, c.materialization_hypertable_name) "
            "WHERE j.hypertable_name IS NOT NULL ORDER BY 1, 2",
        )
    assert jobs == [
        ("readings", "policy_compression", None, None, timedelta(hours=12), "7 days"),
        ("readings", "policy_retention", None, None, timedelta(days=1), "90 days"),
        (
            "readings_1d",
            "policy_refresh_continuous_aggregate",
            "7 days",
            "1 day",
            timedelta(hours=1),
            None,
        ),
        ("readings_1h", "policy_compression", None, None, timedelta(hours=12), "90 days"),
        (
            "readings_1h",
            "policy_refresh_continuous_aggregate",
            "3 days",
            "01:00:00",
            timedelta(minutes=30),
            None,
        ),
        ("readings_5m", "policy_compression", None, None, timedelta(hours=12), "30 days"),
        (
            "readings_5m",
            "policy_refresh_continuous_aggregate",
            "3 days",
            "00:05:00",
            timedelta(minutes=5),
            None,
        ),
    ]
    with ts_engine.begin() as conn:
        caggs.set_retention(conn, 0)  # 0 keeps raw readings for ever: no policy
        assert caggs.retention_days(conn) == 0


def test_caggs_equal_plain_tables_with_late_data_and_missing_lanes(
    ts_engine: Engine, pg_engine: Engine, network: Network
) -> None:
    """The aggregates hold the plain tables' sums (intervals counted exactly although lanes miss
    intervals), the service answers are the same, also while late readings wait in the dirty-key
    log and after the worker refreshed them."""
    from tests.test_rollups import _answers, _same
    from tests.test_rollups import _seed as seed_rollups

    ragged = _ragged(network, RAG_START, 40)
    for engine in (ts_engine, pg_engine):
        seed_rollups(engine, network)
        _insert(engine, ragged)
        rollup.catch_up(engine, network.timezone)
        with engine.connect() as conn:
            assert rollup.pending(conn) == 0
    _views_equal_tables(ts_engine, pg_engine)
    five = _sums(ts_engine, caggs.readings_5m)
    lanes = {s.station_id: s.lanes for s in network.stations}
    assert any(r["intervals"] * lanes[s] != r["lane_rows"] for (s, _b), r in five.items())
    _same(_answers(ts_engine, network, "rollup"), _answers(pg_engine, network, "rollup"))
    _same(_answers(ts_engine, network, "rollup"), _answers(ts_engine, network, "raw"))
    # what the compression policies do after 30 / 90 days: late data lands in compressed chunks
    assert _compress_caggs(ts_engine) >= 2  # chunks of readings_5m and readings_1h
    _same(_answers(ts_engine, network, "rollup"), _answers(pg_engine, network, "rollup"))

    # Late readings (a month old: far behind the refresh policies' 3-day window) into buckets
    # already materialised, including a lane that missed an interval, and a duplicate.
    st = network.stations[0]
    late = [
        _reading(st.station_id, 1, RAG_START - timedelta(hours=5), 9),
        *[r for r in ragged if r["lane"] == 1][:3],  # duplicates
        _reading(st.station_id, 2, RAG_START - timedelta(hours=5), 4),
    ]
    missing = ragged
    have = {(r["station_id"], r["lane"], r["interval_start"]) for r in missing}
    sid = missing[0]["station_id"]
    gap = next(
        (sid, lane, RAG_START + timedelta(seconds=30 * i))
        for i in range(80)
        for lane in (1, 2)
        if (sid, lane, RAG_START + timedelta(seconds=30 * i)) not in have
    )
    late.append(_reading(gap[0], gap[1], gap[2], 13))
    for engine in (ts_engine, pg_engine):
        assert _insert(engine, late) == 3
    with ts_engine.connect() as conn:
        assert rollup.pending(conn) > 0
    stale = _sums(ts_engine, caggs.readings_5m)
    assert stale == five  # the materialised buckets wait for a refresh ...
    _same(
        _answers(ts_engine, network, "rollup"), _answers(pg_engine, network, "raw")
    )  # ... answers do not
    for engine in (ts_engine, pg_engine):
        rollup.catch_up(engine, network.timezone)
    with ts_engine.connect() as conn:
        assert rollup.pending(conn) == 0
    assert _sums(ts_engine, caggs.readings_5m) != five
    _views_equal_tables(ts_engine, pg_engine)
    _same(_answers(ts_engine, network, "rollup"), _answers(pg_engine, network, "rollup"))
    for level in ("segment", "corridor"):
        table = rollup.TARGET_TABLES[level]
        with ts_engine.connect() as a, pg_engine.connect() as b:
            q = select(table).order_by(table.c.target_id, table.c.bucket_start)
            ta, tb = a.execute(q).all(), b.execute(q).all()
        assert len(ta) == len(tb) > 0
        for x, y in zip(ta, tb, strict=True):
            assert x[:2] == y[:2]
            assert all(math.isclose(u, v, rel_tol=1e-9) for u, v in zip(x[2:], y[2:], strict=True))


def test_newest_buckets_are_real_time(ts_engine: Engine, network: Network) -> None:
    """materialized_only = false: buckets after the refreshed ones show in the views at once."""
    st = network.stations[0].station_id
    _insert(ts_engine, [_reading(st, 1, RAG_START, 5)])
    rollup.catch_up(ts_engine, network.timezone)
    newer = RAG_START + timedelta(hours=2)
    _insert(ts_engine, [_reading(st, 1, newer, 7), _reading(st, 2, newer, 3)])
    with ts_engine.connect() as conn:
        row = conn.execute(
            select(caggs.readings_5m.c.lane_rows, caggs.readings_5m.c.intervals).where(
                caggs.readings_5m.c.bucket_start == newer
            )
        ).one()
        hour = conn.execute(
            select(func.count())
            .select_from(caggs.readings_1h)
            .where(caggs.readings_1h.c.bucket_start == newer)
        ).scalar_one()
    assert tuple(row) == (2, 1)
    assert hour == 1


def test_retention_drops_raw_chunks_and_keeps_aggregates(
    ts_engine: Engine, network: Network
) -> None:
    """The retention policy drops raw chunks; the aggregates (and what the service answers from
    them over whole 5-minute buckets) stay, also after the refresh policies and the worker ran."""
    from tests.test_rollups import END, START, _answers, _same
    from tests.test_rollups import _seed as seed_rollups

    seed_rollups(ts_engine, network)
    rollup.catch_up(ts_engine, network.timezone)
    before = _answers(ts_engine, network, "rollup", [(START, END)])
    sums = {v: _sums(ts_engine, caggs.metadata.tables[v]) for v in caggs.VIEWS}
    days = (datetime.now(UTC) - END).days - 2
    assert days >= 1, "the test's readings are fixed in November 2026"
    with ts_engine.begin() as conn:
        caggs.set_retention(conn, days)
        assert caggs.retention_days(conn) == days
        jobs = (
            conn.execute(
                text(
                    "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name IN "
                    "('policy_retention', 'policy_refresh_continuous_aggregate') ORDER BY proc_name DESC"
                )
            )
            .scalars()
            .all()
        )
    with ts_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for job in jobs:  # retention first, then every refresh policy
            conn.execute(text("CALL run_job(:j)"), {"j": job})
        assert conn.execute(select(func.count()).select_from(schema.readings)).scalar() == 0
    rollup.catch_up(ts_engine, network.timezone)
    assert {v: _sums(ts_engine, caggs.metadata.tables[v]) for v in caggs.VIEWS} == sums
    _same(_answers(ts_engine, network, "rollup", [(START, END)]), before)


def test_a_shorter_retention_moves_the_refresh_windows_and_keeps_the_rows(
    ts_engine: Engine, network: Network
) -> None:
    """ITS_RETENTION_RAW_DAYS=2: the 5-minute refresh window stays inside it (a refresh over
    dropped raw chunks would empty buckets); the aggregates are kept, not re-created."""
    _insert(ts_engine, FIRST)
    rollup.catch_up(ts_engine, network.timezone)
    before = _sums(ts_engine, caggs.readings_5m)
    assert len(before) == 4
    assert caggs.setup(ts_engine, network.timezone, retention_raw_days=2)
    with ts_engine.connect() as conn:
        assert rollup.pending(conn) == 0  # nothing to rebuild
        assert caggs.retention_days(conn) == 2
        offsets = dict(
            _rows(
                conn,
                "SELECT c.view_name, j.config->>'start_offset' FROM timescaledb_information.jobs j "
                "JOIN timescaledb_information.continuous_aggregates c "
                "ON j.hypertable_name IN (c.view_name, c.materialization_hypertable_name) "
                "WHERE j.proc_name = 'policy_refresh_continuous_aggregate'",
            )
        )
    # the coarser levels read only their parent's rows, and need two buckets of window
    assert offsets == {"readings_5m": "1 day", "readings_1h": "1 day", "readings_1d": "3 days"}
    assert _sums(ts_engine, caggs.readings_5m) == before


def test_zone_change_recreates_hourly_and_daily(ts_engine: Engine, network: Network) -> None:
    """A network in another zone: setup re-creates the aggregates in that zone and logs the
    readings, and the worker refills them with that zone's local days."""
    from tests.test_rollups import _seed as seed_rollups

    seed_rollups(ts_engine, network)
    rollup.catch_up(ts_engine, network.timezone)
    assert caggs.setup(ts_engine, "America/New_York")
    with ts_engine.connect() as conn:
        assert caggs.zone(conn) == "America/New_York"
        assert rollup.pending(conn) > 0
    rollup.catch_up(ts_engine, "America/New_York")
    days = {b for _s, b in _sums(ts_engine, caggs.readings_1d)}
    assert days == {datetime(2026, 11, 2, 5, tzinfo=UTC)}  # New York's local midnight (EST)
    assert caggs.setup(ts_engine, network.timezone)  # back, for the tests after this one


def _its(*args: str, url: str) -> str:
    """Run the ``its`` command in a child process (its engines end with the process)."""
    env = {**os.environ, "ITS_DATABASE_URL": url, "ITS_RETENTION_RAW_DAYS": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "its.cli", *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_cli_on_timescaledb(ts_engine: Engine) -> None:
    """`its db upgrade`, `its db check` and `its db rollup` (also --rebuild) on TimescaleDB."""
    url = ts_engine.url.render_as_string(hide_password=False)
    assert "on timescaledb" in _its("db", "upgrade", url=url)
    assert "agree" in _its("db", "check", url=url)
    with ts_engine.begin() as conn:  # one statement: one log row per key
        conn.execute(insert(schema.readings).values(FIRST))
    for args in (["--no-progress"], ["--rebuild", "--no-progress"]):
        assert "rolled up 4 dirty keys" in _its("db", "rollup", *args, url=url)
        assert len(_sums(ts_engine, caggs.readings_5m)) == 4
        with ts_engine.connect() as conn:
            assert rollup.pending(conn) == 0
            mat = conn.execute(
                text(
                    "SELECT format('%I.%I', materialization_hypertable_schema, "
                    "materialization_hypertable_name) FROM "
                    "timescaledb_information.continuous_aggregates WHERE view_name = 'readings_5m'"
                )
            ).scalar()
            assert conn.execute(text(f"SELECT count(*) FROM {mat}")).scalar() == 4
