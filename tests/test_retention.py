"""Retention: old raw readings are deleted in small batches once rolled up, the roll-ups stay,
and every answer before the horizon stays what it was: late readings can neither change nor
corrupt it (refused at ingest, skipped by the worker), dirty buckets are kept until rolled up.
On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from ingest.pipeline import Message, Pipeline
from its.config import Settings
from its.contract import serialise_observation
from its.db import horizon, retention, rollup, schema
from its.db.writes import insert_readings, reading_rows
from its.network import Network
from its.service import traffic
from tests.conftest import wait_for
from tests.test_rollups import _same
from tests.traffic_helpers import observation, seed

OLD = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # an hour of readings from here: cleaned up
NEW = OLD + timedelta(hours=3)  # half an hour from here: kept
NOW = OLD + timedelta(days=90, hours=2)  # so the horizon is OLD + 2 h with 90 days' retention
HORIZON = OLD + timedelta(hours=2)
LEVELS = ("station", "segment", "corridor")
BUCKETS = (300, 900, 3600, 86400)


def _speed(_st: Any, t: datetime) -> float:
    return 30.0 + (int(t.timestamp()) // 30) % 17


def _seed(engine: Engine, network: Network) -> list[Any]:
    stations = list(network.stations[::8])
    seed(engine, network, OLD, 60, _speed, stations=stations)
    seed(engine, network, NEW, 30, _speed, stations=stations)
    rollup.catch_up(engine, network.timezone)
    return stations


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    values = {"retention_raw_days": 90, "retention_dead_letter_days": 30}
    return Settings(_env_file=None, data_dir=tmp_path, **(values | kw))


def _answers(engine: Engine, network: Network, start: datetime, end: datetime) -> dict:
    with engine.connect() as conn:
        return {
            (level, bucket): traffic.aggregate(conn, network, level, start, end, bucket)
            for level in LEVELS
            for bucket in BUCKETS
        }


def _raw_rows(engine: Engine, before: datetime | None = None) -> int:
    r = schema.readings
    stmt = select(func.count()).select_from(r)
    if before is not None:
        stmt = stmt.where(r.c.interval_start < before)
    with engine.connect() as conn:
        return conn.execute(stmt).scalar_one()


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_old_raw_rows_go_in_batches_roll_ups_and_answers_stay(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    _seed(engine, network)
    window = (OLD - timedelta(hours=1), OLD + timedelta(hours=2))
    before = _answers(engine, network, *window)
    rolled = {t.name: _count(engine, t) for t in (schema.rollup_5m, schema.rollup_1h)}
    old_rows, new_rows = _raw_rows(engine, HORIZON), _raw_rows(engine) - _raw_rows(engine, HORIZON)
    assert old_rows > 0 and new_rows > 0

    deletes: list[int] = []

    def count_deletes(_conn, _cursor, statement, _params, _context, _many) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("DELETE FROM READINGS"):
            deletes.append(1)

    event.listen(engine, "before_cursor_execute", count_deletes)
    try:
        stats = retention.run_retention(
            engine, _settings(tmp_path, retention_batch_rows=100), now=NOW
        )
    finally:
        event.remove(engine, "before_cursor_execute", count_deletes)

    assert stats.raw_horizon == HORIZON
    assert stats.readings_deleted == old_rows and stats.readings_kept == 0
    assert stats.buckets == 12  # the hour of old readings, bucket by bucket
    # 100 rows per transaction: a 5-minute bucket of 12 stations (about 400 rows) takes several
    assert len(deletes) > stats.buckets
    assert _raw_rows(engine, HORIZON) == 0
    assert _raw_rows(engine) == new_rows
    assert {t.name: _count(engine, t) for t in (schema.rollup_5m, schema.rollup_1h)} == rolled
    assert rollup.pending(engine.connect()) == 0  # deletes log nothing dirty
    _same(_answers(engine, network, *window), before)
    # a second round finds nothing
    again = retention.run_retention(engine, _settings(tmp_path), now=NOW)
    assert again.readings_deleted == 0 and again.buckets == 0


def test_edges_before_the_horizon_answer_whole_five_minute_buckets(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    """A window edge inside a 5-minute bucket used to read that bucket's raw rows; before the
    horizon they are gone, so the bucket comes whole from the roll-ups, never empty or partial."""
    _seed(engine, network)
    aligned = _answers(engine, network, OLD + timedelta(minutes=10), OLD + timedelta(minutes=50))
    retention.run_retention(engine, _settings(tmp_path), now=NOW)
    ragged = _answers(
        engine, network, OLD + timedelta(minutes=12, seconds=30), OLD + timedelta(minutes=47)
    )
    _same(ragged, aligned)
    assert aligned[("segment", 300)], "the comparison covers buckets"


def test_dirty_buckets_are_kept_until_rolled_up(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    stations = _seed(engine, network)
    # a late lane reading of an old bucket, written before the clean-up: the bucket is dirty
    st = stations[0]
    late = OLD + timedelta(minutes=7, seconds=15)
    row = {**reading_rows(observation(st, late, 40.0), NOW)[0], "lane": st.lanes + 1}
    with engine.begin() as conn:
        conn.execute(insert(schema.readings), [row])
    stats = retention.run_retention(engine, _settings(tmp_path), now=NOW)
    bucket_rows = 1 + 10 * st.lanes  # ten 30-s intervals, and the late one
    assert stats.readings_kept == bucket_rows
    assert _raw_rows(engine, HORIZON) == bucket_rows
    # rolled up now, and complete: the next clean-up takes it, and the late reading counts
    rollup.catch_up(engine, network.timezone)
    with engine.connect() as conn:
        five = schema.rollup_5m
        lane_rows = conn.execute(
            select(five.c.lane_rows).where(
                five.c.station_id == st.station_id,
                five.c.bucket_start == OLD + timedelta(minutes=5),
            )
        ).scalar_one()
    assert lane_rows == bucket_rows
    assert retention.run_retention(engine, _settings(tmp_path), now=NOW).readings_deleted == (
        bucket_rows
    )
    assert _raw_rows(engine, HORIZON) == 0


def test_a_late_reading_older_than_the_horizon_cannot_change_the_answers(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    stations = _seed(engine, network)
    settings = _settings(tmp_path)
    retention.run_retention(engine, settings, now=NOW)
    window = (OLD, OLD + timedelta(hours=1))
    before = _answers(engine, network, *window)
    st = stations[0]
    late = observation(st, OLD + timedelta(minutes=20), 90.0, count=40)

    # ingest refuses it, with the reason
    pipeline = Pipeline(engine, settings, clock=lambda: NOW)
    topic = f"{settings.topic_prefix}/stations/{st.station_id}/obs"
    pipeline.handle(Message(topic, serialise_observation(late)))
    pipeline.flush()
    assert pipeline.stats.readings_inserted == 0 and pipeline.stats.dead_letters == 1
    with engine.connect() as conn:
        reason = conn.execute(select(schema.dead_letters.c.reason)).scalar_one()
    assert "older than the raw retention (ITS_RETENTION_RAW_DAYS=90" in reason
    assert HORIZON.isoformat().replace("+00:00", "Z") in reason

    # written straight into readings (a tool): the answers ignore its dirty key, and the worker
    # skips it rather than rebuilding the bucket from this one row
    with engine.begin() as conn:
        insert_readings(conn, reading_rows(late, NOW))
    assert rollup.pending(engine.connect()) > 0
    _same(_answers(engine, network, *window), before)
    rollup.catch_up(engine, network.timezone)
    _same(_answers(engine, network, *window), before)
    # and the next clean-up deletes the stray rows
    assert retention.run_retention(engine, settings, now=NOW).readings_deleted == st.lanes
    _same(_answers(engine, network, *window), before)


def test_old_history_loaded_for_the_first_time_is_rolled_up(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    """Buckets that were never rolled up lost nothing to the clean-up, so history older than
    the horizon (an import with --accept-old) still gets its roll-ups."""
    stations = _seed(engine, network)
    retention.run_retention(engine, _settings(tmp_path), now=NOW)
    older = OLD - timedelta(days=3)
    seed(engine, network, older, 20, _speed, stations=stations)
    window = (older, older + timedelta(minutes=20))
    with engine.connect() as conn:
        raw = traffic.aggregate(conn, network, "segment", *window, 300, source="raw")
    rollup.catch_up(engine, network.timezone)
    retention.run_retention(engine, _settings(tmp_path), now=NOW)
    assert _raw_rows(engine, HORIZON) == 0
    with engine.connect() as conn:
        _same(
            {0: traffic.aggregate(conn, network, "segment", *window, 300)},
            {0: raw},
        )
    assert len(raw) > 1


def test_dead_letters_expire_and_dry_run_deletes_nothing(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    _seed(engine, network)
    d = schema.dead_letters
    with engine.begin() as conn:
        conn.execute(
            insert(d),
            [
                {
                    "topic": "t",
                    "payload": "p",
                    "reason": "old",
                    "received_at": NOW - timedelta(days=31),
                },
                {
                    "topic": "t",
                    "payload": "p",
                    "reason": "new",
                    "received_at": NOW - timedelta(days=29),
                },
            ],
        )
    settings = _settings(tmp_path)
    rows = _raw_rows(engine)
    dry = retention.run_retention(engine, settings, now=NOW, dry_run=True)
    assert dry.dry_run and dry.readings_deleted == _raw_rows(engine, HORIZON) > 0
    assert dry.dead_letters_deleted == 1
    assert _raw_rows(engine) == rows and _count(engine, d) == 2
    with engine.connect() as conn:
        assert horizon.recorded_horizon(conn) is None  # a dry run records nothing
    done = retention.run_retention(engine, settings, now=NOW)
    assert done.dead_letters_deleted == 1 and done.readings_deleted == dry.readings_deleted
    with engine.connect() as conn:
        assert conn.execute(select(d.c.reason)).scalars().all() == ["new"]
        assert horizon.recorded_horizon(conn) == HORIZON
    # 0 keeps for ever; the horizon never moves back
    kept = retention.run_retention(
        engine, _settings(tmp_path, retention_raw_days=0, retention_dead_letter_days=0), now=NOW
    )
    assert kept.raw_horizon is None and kept.dead_letter_horizon is None
    assert "kept for ever" in kept.summary()
    with engine.begin() as conn:
        assert horizon.advance_horizon(conn, OLD, NOW) == HORIZON


def _seed_relative(engine: Engine, network: Network) -> datetime:
    """An hour of readings 100 days ago and half an hour yesterday (real time: for the
    processes that read the clock); returns the time between them."""
    t = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    stations = list(network.stations[::8])
    seed(engine, network, t - timedelta(days=100), 60, _speed, stations=stations)
    seed(engine, network, t - timedelta(days=1), 30, _speed, stations=stations)
    rollup.catch_up(engine, network.timezone)
    return t - timedelta(days=50)


def test_worker_cleans_up_in_the_background(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    """What `its up` and `its ingest` run, every ITS_RETENTION_INTERVAL_S."""
    between = _seed_relative(engine, network)
    new_rows = _raw_rows(engine) - _raw_rows(engine, between)
    stop = threading.Event()
    worker = threading.Thread(
        target=retention.run_worker,
        args=(engine, _settings(tmp_path), stop),
        kwargs={"interval_s": 0.2},
    )
    worker.start()
    try:
        wait_for(lambda: _raw_rows(engine, between) == 0, what="old rows deleted")
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()
    assert _raw_rows(engine) == new_rows > 0


def test_timescaledb_leaves_readings_to_its_policy(
    engine: Engine, network: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TimescaleDB is not installed here: pretend ``readings`` is a hypertable to check that the
    clean-up then deletes no reading (the policy drops chunks) and still expires dead letters."""
    _seed(engine, network)
    monkeypatch.setattr(retention, "is_hypertable", lambda conn: True)
    rows = _raw_rows(engine)
    stats = retention.run_retention(engine, _settings(tmp_path), now=NOW)
    assert stats.readings_note and "TimescaleDB" in stats.readings_note
    assert _raw_rows(engine) == rows


def test_cli_db_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network: Network
) -> None:
    from its.cli import app
    from its.config import get_settings
    from its.db.engine import make_engine

    monkeypatch.setenv("ITS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ITS_DATABASE_URL", raising=False)
    monkeypatch.setenv("ITS_RETENTION_RAW_DAYS", "90")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        engine = make_engine(f"sqlite:///{tmp_path / 'its.db'}")
        between = _seed_relative(engine, network)
        old, rows = _raw_rows(engine, between), _raw_rows(engine)
        dry = runner.invoke(app, ["db", "retention", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert f"would delete {old:,} raw readings" in dry.output
        assert _raw_rows(engine) == rows
        done = runner.invoke(app, ["db", "retention"])
        assert done.exit_code == 0, done.output
        assert f"deleted {old:,} raw readings" in done.output
        assert _raw_rows(engine, between) == 0 and _raw_rows(engine) == rows - old
        engine.dispose()
    finally:
        get_settings.cache_clear()


def test_rebuild_keeps_the_history_the_clean_up_left(
    engine: Engine, network: Network, tmp_path: Path
) -> None:
    """`its db rollup --rebuild` after a clean-up: the 5-minute roll-ups before the horizon are
    all that is left of that history, so they stay, and hours and days are rebuilt from them."""
    _seed(engine, network)
    retention.run_retention(engine, _settings(tmp_path), now=NOW)
    window = (OLD - timedelta(hours=1), NEW + timedelta(hours=1))
    before = _answers(engine, network, *window)
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="time zone"):
            rollup.rebuild(conn)
    with engine.begin() as conn:
        rollup.rebuild(conn, network.timezone)
    assert rollup.catch_up(engine, network.timezone) > 0
    _same(_answers(engine, network, *window), before)
    assert before[("station", 3600)] and before[("corridor", 86400)]
