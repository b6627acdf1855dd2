"""Roll-ups give exactly the raw path's answers, however readings arrive and however far behind
the worker is: late data, duplicates, bulk loads written straight into ``readings``, local days
(also across DST), retention of raw rows, and the same rows on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import math
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from its.db import rollup, schema
from its.db.timebucket import time_bucket
from its.db.writes import insert_readings
from its.network import Network, Station
from its.service import live, traffic
from tests.traffic_helpers import seed

# Two windows: one crosses local midnight in Jakarta (17:00 UTC), one crosses UTC midnight.
WINDOWS = [datetime(2026, 11, 2, 16, 35, tzinfo=UTC), datetime(2026, 11, 2, 23, 40, tzinfo=UTC)]
MINUTES = 45
START, END = WINDOWS[0] - timedelta(hours=1), WINDOWS[-1] + timedelta(hours=2)
LEVELS = ("station", "segment", "corridor")
BUCKETS = (300, 900, 3600, 86400)
# An aligned window, and one whose edges cut 5-minute buckets, hours and days
SPANS = [
    (START, END),
    (WINDOWS[0] + timedelta(seconds=450), END - timedelta(minutes=53, seconds=30)),
]


def _crc(s: str) -> int:
    return zlib.crc32(s.encode())


def _speed(network: Network) -> Any:
    """Deterministic speeds with silent stations, gaps and a silent segment."""
    silent = network.segments[1].segment_id

    def speed(st: Station, t: datetime) -> float | None:
        seg = network.segment(st.segment_id)
        n = int(t.timestamp()) // 30
        if seg.segment_id == silent or _crc(st.station_id) % 11 == 0:
            return None
        if _crc(st.station_id) % 3 == 0 and n % 7 == 0:
            return None
        return seg.free_flow_kph * (0.15 + (_crc(seg.segment_id) % 80) / 100) * (1 + n % 13 / 1013)

    return speed


def _seed(engine: Engine, network: Network, stations: list[Station] | None = None) -> None:
    stations = stations or list(network.stations[::6])
    for start in WINDOWS:
        seed(engine, network, start, MINUTES, _speed(network), stations=stations[0::2], count=10)
        seed(engine, network, start, MINUTES, _speed(network), stations=stations[1::2], count=17)


def _answers(
    engine: Engine, network: Network, source: str, spans: list[Any] = SPANS
) -> dict[Any, list[traffic.Interval]]:
    out = {}
    with engine.connect() as conn:
        for start, end in spans:
            for level in LEVELS:
                for bucket in BUCKETS:
                    out[(start, level, bucket)] = traffic.aggregate(
                        conn, network, level, start, end, bucket, source=source
                    )
    return out


def _same(a: dict[Any, list[traffic.Interval]], b: dict[Any, list[traffic.Interval]]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert [(i.target_id, i.bucket_start) for i in a[key]] == [
            (i.target_id, i.bucket_start) for i in b[key]
        ], key
        for x, y in zip(a[key], b[key], strict=True):
            for field in ("speed_kph", "flow_vph", "occupancy", "pct_observed"):
                u, v = getattr(x, field), getattr(y, field)
                assert (u is None) == (v is None), (key, x, y)
                if u is not None:
                    assert math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12), (key, field, x, y)


def _pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return rollup.pending(conn)


def _rows(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_rollups_equal_raw_on_every_level_bucket_and_backend(
    sqlite_engine: Engine, pg_engine: Engine, network: Network
) -> None:
    answers = []
    for engine in (sqlite_engine, pg_engine):
        _seed(engine, network)
        assert _pending(engine) > 0
        raw = _answers(engine, network, "raw")
        _same(_answers(engine, network, "rollup"), raw)  # nothing rolled up yet: raw rows answer
        assert rollup.catch_up(engine, network.timezone) > 0
        assert _pending(engine) == 0
        assert _rows(engine, schema.rollup_5m) > 0 and _rows(engine, schema.rollup_1d) > 0
        rolled = _answers(engine, network, "rollup")
        _same(rolled, raw)
        answers.append(rolled)
    _same(answers[0], answers[1])
    # the comparison covers what it claims: local days, gaps, every level
    days = {r.bucket_start for r in answers[0][(START, "segment", 86400)]}
    assert days == {datetime(2026, 11, 1, 17, tzinfo=UTC), datetime(2026, 11, 2, 17, tzinfo=UTC)}
    assert any(r.pct_observed < 100 for r in answers[0][(START, "segment", 300)])
    assert len({r.target_id for r in answers[0][(START, "corridor", 900)]}) > 1


def test_rollups_are_what_answers_come_from(engine: Engine, network: Network) -> None:
    """Once rolled up, deleting the raw rows (retention) leaves the answers as they were: they
    are read from the roll-ups, and a delete does not mark anything dirty."""
    _seed(engine, network, network.stations[:6])
    rollup.catch_up(engine, network.timezone)
    before = _answers(engine, network, "rollup", SPANS[:1])
    with engine.begin() as conn:
        conn.execute(delete(schema.readings))
    assert _pending(engine) == 0
    _same(_answers(engine, network, "rollup", SPANS[:1]), before)
    assert all(not rows for rows in _answers(engine, network, "raw", SPANS[:1]).values())


def test_late_and_duplicate_readings(engine: Engine, network: Network) -> None:
    stations = network.stations[:8]
    _seed(engine, network, stations)
    rollup.catch_up(engine, network.timezone)
    before = _answers(engine, network, "rollup")

    # A duplicate (resent with other values) changes nothing and logs nothing.
    st = stations[0]
    seed(engine, network, WINDOWS[0], 10, lambda s, t: 11.0, stations=[st], count=40)
    assert _pending(engine) == 0
    _same(_answers(engine, network, "rollup"), before)

    # A reading hours late (in a gap of the first window) is in answers before and after the
    # worker has rolled it up, and equals the raw path both times.
    late = WINDOWS[0] - timedelta(minutes=35)
    seed(engine, network, late, 1, lambda s, t: 23.0, stations=[st], count=3)
    assert _pending(engine) > 0
    raw = _answers(engine, network, "raw")
    _same(_answers(engine, network, "rollup"), raw)
    rollup.catch_up(engine, network.timezone)
    _same(_answers(engine, network, "rollup"), raw)
    key = (START, "station", 300)
    assert len(raw[key]) == len(before[key]) + 1


def test_partial_catch_up_still_answers_exactly(engine: Engine, network: Network) -> None:
    _seed(engine, network, network.stations[:12])
    with engine.begin() as conn:
        assert 0 < rollup.refresh(conn, network.timezone, limit=50) <= 50
    assert _pending(engine) > 0
    _same(_answers(engine, network, "rollup"), _answers(engine, network, "raw"))


def _bulk_load(engine: Engine, station_ids: list[str], start: datetime, minutes: int) -> None:
    """Rows written straight into readings, as an analyst's bulk load of history would: COPY on
    PostgreSQL, INSERT ... SELECT over a generated series on SQLite."""
    rows = [
        (sid, lane, start + timedelta(seconds=30 * i), 30, 5 + (i + lane) % 9, 0.05 + lane / 100,
         None if lane == 3 else 40.0 + i % 17, "ok", start)
        for sid in station_ids
        for lane in (1, 2, 3)
        for i in range(minutes * 2)
    ]  # fmt: skip
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur:
                cols = "station_id, lane, interval_start, period_s, count, occupancy, "
                cols += "speed_kph, status, received_at"
                with cur.copy(f"COPY readings ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        return
    with engine.begin() as conn:
        conn.execute(
            text(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :k - 1), "
                "l(lane) AS (VALUES (1), (2), (3)) "
                "INSERT INTO readings (station_id, lane, interval_start, period_s, count, "
                "occupancy, speed_kph, status, received_at) "
                "SELECT :sid, lane, strftime('%Y-%m-%d %H:%M:%S', :t0, '+' || (30 * i) || "
                "' seconds') || '.000000', 30, 5 + (i + lane) % 9, 0.05 + lane / 100.0, "
                "CASE WHEN lane = 3 THEN NULL ELSE 40.0 + i % 17 END, 'ok', :t0 FROM n, l"
            ),
            [
                {"sid": sid, "k": minutes * 2, "t0": start.replace(tzinfo=None).isoformat(" ")}
                for sid in station_ids
            ],
        )


def test_bulk_load_into_readings_is_rolled_up(engine: Engine, network: Network) -> None:
    ids = [s.station_id for s in network.stations[:5]]
    _bulk_load(engine, ids, START, 180)
    assert _rows(engine, schema.readings) == 5 * 3 * 360
    assert _pending(engine) > 0
    raw = _answers(engine, network, "raw")
    assert raw[(START, "station", 300)]
    rollup.catch_up(engine, network.timezone)
    assert _pending(engine) == 0
    _same(_answers(engine, network, "rollup"), raw)


def test_local_days_across_dst(engine: Engine, network: Network) -> None:
    """Hourly and daily roll-ups in a zone with DST (New York, 2026-03-08) equal the raw path."""
    ny = dataclasses.replace(network, timezone="America/New_York")
    start = datetime(2026, 3, 7, 3, 0, tzinfo=UTC)
    ids = [s.station_id for s in ny.stations[:3]]
    for day in range(3):
        _bulk_load(engine, ids, start + timedelta(days=day), 150)
    rollup.catch_up(engine, ny.timezone)
    spans = [(start - timedelta(days=1), start + timedelta(days=4))]
    rolled = _answers(engine, ny, "rollup", spans)
    _same(rolled, _answers(engine, ny, "raw", spans))
    days = [r.bucket_start for r in rolled[(spans[0][0], "station", 86400)]]
    assert datetime(2026, 3, 8, 5, tzinfo=UTC) in days  # midnight EST
    assert datetime(2026, 3, 9, 4, tzinfo=UTC) in days  # midnight EDT


def test_live_views_from_rollups(engine: Engine, network: Network) -> None:
    """The live map and station health are the same before and after the worker rolled up."""
    now = WINDOWS[-1] + timedelta(minutes=MINUTES - 1, seconds=10)
    _seed(engine, network)
    with engine.connect() as conn:
        before = live.network_state(conn, network, now=now)
        health = live.station_health(conn, network, now=now)
    rollup.catch_up(engine, network.timezone)
    with engine.connect() as conn:
        assert live.network_state(conn, network, now=now) == before
        assert live.station_health(conn, network, now=now) == health
    assert {h["health"] for h in health} >= {"ok", "no-data"}


def test_cli_db_rollup(tmp_path, monkeypatch, network: Network) -> None:
    from its.cli import app
    from its.config import get_settings
    from its.db.engine import make_engine

    monkeypatch.setenv("ITS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ITS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
        engine = make_engine(f"sqlite:///{tmp_path / 'its.db'}")
        _bulk_load(engine, [network.stations[0].station_id], START, 20)
        result = CliRunner().invoke(app, ["db", "rollup", "--no-progress"])
        assert result.exit_code == 0, result.output
        assert "rolled up 4 dirty keys" in result.output
        assert _rows(engine, schema.rollup_5m) == 4 and _pending(engine) == 0
        result = CliRunner().invoke(app, ["db", "rollup", "--rebuild", "--no-progress"])
        assert "rolled up 4 dirty keys" in result.output, result.output
        assert _rows(engine, schema.rollup_5m) == 4
        engine.dispose()
    finally:
        get_settings.cache_clear()


def test_duplicates_inside_pg_statement_log_nothing(pg_engine: Engine, network: Network) -> None:
    """ON CONFLICT DO NOTHING skips duplicates before the statement trigger sees them."""
    st = network.stations[0]
    t0 = datetime(2026, 11, 2, 10, tzinfo=UTC)
    row = {
        "station_id": st.station_id, "lane": 1, "interval_start": t0, "period_s": 30,
        "count": 1, "occupancy": 0.1, "speed_kph": 50.0, "status": "ok", "received_at": t0,
    }  # fmt: skip
    with pg_engine.begin() as conn:
        assert insert_readings(conn, [row]) == 1
    with pg_engine.begin() as conn:
        conn.execute(delete(schema.rollup_dirty))
    with pg_engine.begin() as conn:
        assert insert_readings(conn, [dict(row, count=9)]) == 0
    assert _pending(pg_engine) == 0


def test_chosen_targets_only(engine: Engine, network: Network) -> None:
    """``target_ids`` restricts stored and summed answers alike to the targets asked for."""
    _seed(engine, network, list(network.stations[::8]))
    rollup.catch_up(engine, network.timezone)
    segs = sorted({s.segment_id for s in network.stations[::16]})
    corridors = sorted({network.segment(s).corridor_id for s in segs})[:1]
    with engine.connect() as conn:
        for level, ids in (("segment", segs), ("corridor", corridors), ("station", ["NOPE"])):
            for bucket in (300, 3600):
                a, b = (
                    traffic.aggregate(conn, network, level, *SPANS[1], bucket, target_ids=ids,
                                      source=source)
                    for source in ("rollup", "raw")
                )  # fmt: skip
                _same({level: a}, {level: b})
                assert {i.target_id for i in a} <= set(ids)
                assert bool(a) == (level != "station")


def test_calendar_edge_rows_loaded_straight_into_readings_do_not_stall_the_worker(
    engine: Engine, network: Network
) -> None:
    """Ingest refuses readings before 1970, but a bulk load can write anything: such keys are
    skipped (their raw rows kept) instead of overflowing the calendar on every round and holding
    back every key behind them."""
    ids = [s.station_id for s in network.stations[:2]]
    _bulk_load(engine, ids[:1], datetime(1, 1, 1, tzinfo=UTC), 2)
    _bulk_load(engine, ids, START, 30)
    rollup.catch_up(engine, network.timezone)
    assert _pending(engine) == 0
    with engine.connect() as conn:
        oldest = conn.scalar(select(func.min(schema.rollup_5m.c.bucket_start)))
    assert oldest is not None and oldest.replace(tzinfo=UTC) >= START - timedelta(minutes=5)
    spans = [(START, START + timedelta(minutes=30))]
    _same(_answers(engine, network, "rollup", spans), _answers(engine, network, "raw", spans))


def test_two_step_raw_sums_equal_the_one_step_definition(engine: Engine, network: Network) -> None:
    """The worker and the read path group raw rows per interval, then per bucket (no
    ``count(DISTINCT)``); the one-step form (``raw_sums_columns``, what a continuous aggregate
    can hold) gives the same sums, with gaps and single loops, per 5 minutes and per hour."""
    _seed(engine, network)
    r = schema.readings
    where = (r.c.interval_start >= START, r.c.interval_start < END)
    for width in (timedelta(minutes=5), timedelta(hours=1)):
        bucket = time_bucket(width, r.c.interval_start)
        one = (
            select(*rollup.raw_sums_columns(bucket)).where(*where).group_by(r.c.station_id, bucket)
        )
        two = rollup.raw_sums_query(lambda ts, w=width: time_bucket(w, ts), *where)
        with engine.connect() as conn:
            a = {(row[0], row[1]): row[2:] for row in conn.execute(one)}
            b = {(row[0], row[1]): row[2:] for row in conn.execute(two)}
        assert a.keys() == b.keys() and len(a) > 10
        for key in a:
            for x, y in zip(a[key], b[key], strict=True):
                if isinstance(x, datetime):
                    assert x == y, key
                else:
                    assert math.isclose(float(x), float(y), rel_tol=1e-12, abs_tol=1e-12), key


def test_binary_results_give_the_same_rows(pg_engine: Engine, network: Network) -> None:
    """Roll-up rows fetched in PostgreSQL's binary format (the read path's hot queries) are the
    rows the text format gives, to the last bit."""
    from its.db.engine import BINARY_RESULTS

    _seed(pg_engine, network)
    rollup.catch_up(pg_engine, network.timezone)
    t = schema.rollup_segment_5m
    query = select(t).order_by(t.c.target_id, t.c.bucket_start)
    with pg_engine.connect() as conn:
        text_rows = conn.execute(query).all()
        binary_rows = conn.execute(query.execution_options(**{BINARY_RESULTS: True})).all()
    assert text_rows and binary_rows == text_rows
    with pg_engine.connect() as conn:
        answers = traffic.aggregate(conn, network, "segment", START, END, 300)
    assert answers and {i.target_id for i in answers} <= set(network.target_lanes["segment"])


def test_network_groups_are_the_stations_of_each_target(network: Network) -> None:
    """The per-network station groups and lane counts the API reads on every request."""
    groups, lanes = network.station_groups, network.target_lanes
    assert set(groups["station"]) == {s.station_id for s in network.stations}
    assert set(groups["corridor"]) == {c.corridor_id for c in network.corridors}
    for seg in network.segments:
        assert set(groups["segment"][seg.segment_id]) == {
            s.station_id for s in network.stations_of(seg.segment_id)
        }
    corridor_stations = {
        c.corridor_id: {
            s.station_id
            for s in network.stations
            if network.segment(s.segment_id).corridor_id == c.corridor_id
        }
        for c in network.corridors
    }
    assert {k: set(v) for k, v in groups["corridor"].items()} == corridor_stations
    by_id = {s.station_id: s for s in network.stations}
    for level in ("station", "segment", "corridor"):
        for target, stations in groups[level].items():
            if stations:
                assert lanes[level][target] == sum(by_id[s].lanes for s in stations)
            else:
                assert target not in lanes[level]
