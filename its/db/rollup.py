"""The roll-up worker: recompute the (station, 5-minute) buckets the triggers logged as dirty.

Triggers on ``readings`` (:mod:`its.db.rollup_sql`) append a (station, bucket) key to
``rollup_dirty`` for every row written, however it was written. :func:`refresh` claims a batch of
keys (deleting them from the log in the same transaction), recomputes those 5-minute buckets from
the raw rows, then the local hours and days that hold them from the 5-minute sums (hierarchy
5 min -> 1 h -> 1 day), and commits. Each bucket is *recomputed*, never incremented, so running a
key twice, or two workers at once, gives the same rows: a late reading updates its bucket and a
duplicate (which the triggers never log) changes nothing.

Why this is race-free: the worker deletes a key before reading the raw rows, in one transaction.
A writer that commits before that read is seen by it; one that commits later has logged its own
key, which stays for the next round. On PostgreSQL the claim uses ``FOR UPDATE SKIP LOCKED`` so
several workers share the log; on SQLite the claim is the transaction's first (write) statement,
so no writer can commit in between.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Float,
    Table,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from its.db import horizon, schema
from its.db.engine import BUCKET_ORIGIN
from its.db.timebucket import time_bucket

log = logging.getLogger(__name__)

FIVE_MIN = timedelta(minutes=5)
DEFAULT_BATCH = 5000
# Claimed keys further apart than this are recomputed in separate range reads, so one late
# reading does not make a batch read every raw row between it and the newest data.
CLUSTER_GAP = timedelta(minutes=30)

SUM_COLUMNS = (
    "flow_sum",
    "intervals",
    "lane_rows",
    "occ_sum",
    "occ_n",
    "q_speed",
    "qv_measured",
    "occ_est",
)
MAX_COLUMNS = ("period_s", "last_start")


@dataclass(frozen=True)
class Level:
    """A stored roll-up level: its table and bucket width; ``local`` levels follow the network's
    time zone (hours and days), the 5-minute level is zone-independent."""

    table: Table
    width: timedelta
    local: bool


LEVEL_5M = Level(schema.rollup_5m, FIVE_MIN, False)
LEVEL_1H = Level(schema.rollup_1h, timedelta(hours=1), True)
LEVEL_1D = Level(schema.rollup_1d, timedelta(days=1), True)
LEVELS = (LEVEL_5M, LEVEL_1H, LEVEL_1D)
#: buckets rolled up: the range the API answers (docs/api.md, "Limits")
ROLLUP_START = datetime(1970, 1, 1, tzinfo=UTC)
ROLLUP_END = datetime(2200, 1, 1, tzinfo=UTC)


def stored_levels(conn: Connection) -> tuple[Level, ...]:
    """The stored station levels on this connection's backend: the roll-up tables, or on
    TimescaleDB the continuous aggregates with the same columns (:mod:`its.db.caggs`)."""
    from its.db import caggs

    return caggs.levels(conn)


# --------------------------------------------------------------------------- bucket arithmetic


def bucket_floor(ts: datetime, width: timedelta, tz: str | None) -> datetime:
    """Start of the bucket holding ``ts``, as ``time_bucket`` computes it (origin 2000-01-03,
    local wall-clock time where a zone is given)."""
    if tz is None:
        origin = BUCKET_ORIGIN.replace(tzinfo=UTC)
        return origin + (ts - origin) // width * width
    zone = ZoneInfo(tz)
    local = ts.astimezone(zone).replace(tzinfo=None)
    start = BUCKET_ORIGIN + (local - BUCKET_ORIGIN) // width * width
    return start.replace(tzinfo=zone).astimezone(UTC)


def bucket_ceil(ts: datetime, width: timedelta, tz: str | None) -> datetime:
    """The first bucket boundary at or after ``ts``."""
    start = bucket_floor(ts, width, tz)
    if start == ts:
        return ts
    if tz is None:
        return start + width
    zone = ZoneInfo(tz)
    return (
        (start.astimezone(zone).replace(tzinfo=None) + width).replace(tzinfo=zone).astimezone(UTC)
    )


# --------------------------------------------------------------------------- raw sums


def _lane_terms() -> dict[str, Any]:
    """Per reading (one lane over one interval): the terms the roll-up sums add up. q is the
    lane flow; a lane with a measured speed adds q / v, a single loop (no speed) adds its
    occupancy, from which q / v = occ x 1000 / g at read time."""
    r = schema.readings
    # the period as a float, not NUMERIC (SQLAlchemy's default for true division): the same
    # double either way, without a numeric conversion per row
    q = cast(r.c.count, Float) * 3600.0 / cast(r.c.period_s, Float)
    measured = and_(r.c.speed_kph.is_not(None), r.c.speed_kph > 0)
    estimated = and_(r.c.speed_kph.is_(None), r.c.occupancy > 0, r.c.count > 0)
    return {
        "q": q,
        "q_speed": case((measured, q), (estimated, q), else_=None),
        "qv_measured": case((measured, q / r.c.speed_kph), else_=None),
        "occ_est": case((estimated, r.c.occupancy), else_=None),
    }


def raw_sums_columns(bucket: Any) -> list[Any]:
    """The roll-up sums of readings grouped by station and ``bucket``, in one grouping (the form
    a TimescaleDB continuous aggregate can take, bar its ``count(DISTINCT)``). The worker and
    the read path use :func:`raw_sums_query`, the same sums in two steps."""
    r = schema.readings
    t = _lane_terms()
    zero = cast(0.0, Float)
    sums = {
        "flow_sum": func.coalesce(func.sum(t["q"]), zero),
        "intervals": func.count(func.distinct(r.c.interval_start)),
        "lane_rows": func.count(),
        "occ_sum": func.coalesce(func.sum(r.c.occupancy), zero),
        "occ_n": func.count(r.c.occupancy),
        "q_speed": func.coalesce(func.sum(t["q_speed"]), zero),
        "qv_measured": func.coalesce(func.sum(t["qv_measured"]), zero),
        "occ_est": func.coalesce(func.sum(t["occ_est"]), zero),
        "period_s": func.max(r.c.period_s),
        "last_start": func.max(r.c.interval_start),
    }
    # the order of COLUMNS: pieces of an answer are glued with UNION ALL, which goes by position
    return [
        r.c.station_id.label("station_id"),
        bucket.label("bucket_start"),
        *(sums[name].label(name) for name in (*SUM_COLUMNS, *MAX_COLUMNS)),
    ]


def raw_sums_query(bucket_of: Callable[[Any], Any], *where: Any) -> Any:
    """Roll-up sums (columns station_id, bucket_start, SUM_COLUMNS, MAX_COLUMNS) of the readings
    matching ``where``, per station and bucket (``bucket_of(interval_start)``).

    Grouped in two steps: per station and interval over its lanes, then per station and bucket
    over the intervals, so ``intervals`` is a plain count. The one-step form needs
    ``count(DISTINCT interval_start)``, which makes PostgreSQL sort every row by station (on
    disk beyond ``work_mem``: 60,000 rows, five minutes of 2,000 stations, took 480 ms against
    280 ms hashed, under load). This is what the worker stores and what the read path reads raw.
    """
    r = schema.readings
    t = _lane_terms()
    per_interval = (
        select(
            r.c.station_id.label("station_id"),
            r.c.interval_start.label("interval_start"),
            func.sum(t["q"]).label("flow_sum"),
            func.count().label("lane_rows"),
            func.sum(r.c.occupancy).label("occ_sum"),
            func.count(r.c.occupancy).label("occ_n"),
            func.sum(t["q_speed"]).label("q_speed"),
            func.sum(t["qv_measured"]).label("qv_measured"),
            func.sum(t["occ_est"]).label("occ_est"),
            func.max(r.c.period_s).label("period_s"),
        )
        .where(*where)
        .group_by(r.c.station_id, r.c.interval_start)
        .subquery("per_interval")
    )
    i = per_interval.c
    bucket = bucket_of(i.interval_start)
    zero = cast(0.0, Float)
    sums = {
        "flow_sum": func.coalesce(func.sum(i.flow_sum), zero),
        "intervals": func.count(),
        "lane_rows": func.sum(i.lane_rows),
        "occ_sum": func.coalesce(func.sum(i.occ_sum), zero),
        "occ_n": func.sum(i.occ_n),
        "q_speed": func.coalesce(func.sum(i.q_speed), zero),
        "qv_measured": func.coalesce(func.sum(i.qv_measured), zero),
        "occ_est": func.coalesce(func.sum(i.occ_est), zero),
        "period_s": func.max(i.period_s),
        "last_start": func.max(i.interval_start),
    }
    return select(
        i.station_id.label("station_id"),
        bucket.label("bucket_start"),
        *(sums[name].label(name) for name in (*SUM_COLUMNS, *MAX_COLUMNS)),
    ).group_by(i.station_id, bucket)


def sums_of_sums_columns(source: Any, bucket: Any) -> list[Any]:
    """Roll-up rows of ``source`` regrouped into a coarser ``bucket``: sums add, maxima max."""
    c = source.c
    return [
        c.station_id.label("station_id"),
        bucket.label("bucket_start"),
        *(func.sum(c[name]).label(name) for name in SUM_COLUMNS),
        *(func.max(c[name]).label(name) for name in MAX_COLUMNS),
    ]


# --------------------------------------------------------------------------- stations to targets

TARGET_COLUMNS = (
    "target_id",
    "bucket_start",
    "flow",
    "stations",
    "q_speed",
    "q_over_v",
    "occ_sum",
    "occ_n",
    "lane_rows",
    "expected_own",
    "lanes_reporting",
)
TARGET_TABLES = {"segment": schema.rollup_segment_5m, "corridor": schema.rollup_corridor_5m}
DEFAULT_PERIOD_S = 30


def target_key(level: str) -> Any:
    """The column that names the station, segment or corridor a station counts towards."""
    st, sg = schema.stations, schema.segments
    keys = {"station": st.c.station_id, "segment": st.c.segment_id, "corridor": sg.c.corridor_id}
    try:
        return keys[level]
    except KeyError:
        raise ValueError(f"unknown level {level!r}") from None


def target_sums_query(sums: Any, level: str, bucket_s: float) -> Any:
    """Station sums (a subquery with the roll-up columns) summed per target and bucket.

    Per station: flow_sum / intervals is its flow (volume normalised for missing intervals), and
    q and q / v are averaged over the intervals observed, with q / v = occ 1000 / g on single
    loops. Those add up per target; the formulas in its.service.traffic finish the job.
    """
    st, sg = schema.stations, schema.segments
    s = sums
    key = target_key(level)
    intervals = cast(s.c.intervals, Float)
    width = cast(float(bucket_s), Float)
    expected_own = st.c.lanes * case(
        (width / s.c.period_s > 1.0, width / s.c.period_s), else_=cast(1.0, Float)
    )
    source = s.join(st, st.c.station_id == s.c.station_id)
    if level == "corridor":
        source = source.join(sg, sg.c.segment_id == st.c.segment_id)
    return (
        select(
            key.label("target_id"),
            s.c.bucket_start.label("bucket_start"),
            func.sum(s.c.flow_sum / intervals).label("flow"),
            func.count().label("stations"),
            func.sum(s.c.q_speed / intervals).label("q_speed"),
            func.sum(
                (s.c.qv_measured + s.c.occ_est * 1000.0 / st.c.vehicle_length_m) / intervals
            ).label("q_over_v"),
            func.sum(s.c.occ_sum).label("occ_sum"),
            func.sum(s.c.occ_n).label("occ_n"),
            func.sum(s.c.lane_rows).label("lane_rows"),
            func.sum(expected_own).label("expected_own"),
            func.sum(st.c.lanes).label("lanes_reporting"),
        )
        .select_from(source)
        .where(s.c.intervals > 0)
        .group_by(key, s.c.bucket_start)
    )


def refresh_targets(
    conn: Connection, buckets: set[datetime], five: Table = schema.rollup_5m
) -> None:
    """Recompute the segment and corridor 5-minute rows of ``buckets`` from the station rows
    (``five``: the 5-minute station level, a table or TimescaleDB's continuous aggregate)."""
    ordered = sorted(buckets)
    for i in range(0, len(ordered), 500):
        part = ordered[i : i + 500]
        sums = select(five).where(five.c.bucket_start.in_(part)).subquery("station_sums")
        for level, table in TARGET_TABLES.items():
            conn.execute(delete(table).where(table.c.bucket_start.in_(part)))
            query = target_sums_query(sums, level, FIVE_MIN.total_seconds())
            conn.execute(insert(table).from_select(list(TARGET_COLUMNS), query))


def rebuild_targets(conn: Connection) -> None:
    """Recompute every segment and corridor row, e.g. after the road network was replaced
    (stations moved between segments, or a vehicle length changed)."""
    five = stored_levels(conn)[0].table
    for level, table in TARGET_TABLES.items():
        conn.execute(delete(table))
        query = target_sums_query(five.alias("station_sums"), level, FIVE_MIN.total_seconds())
        conn.execute(insert(table).from_select(list(TARGET_COLUMNS), query))


# --------------------------------------------------------------------------- the worker


def _clusters(keys: Iterable[tuple[str, datetime]]) -> list[tuple[datetime, datetime, set[str]]]:
    """Split keys into time ranges [lo, hi) of nearby buckets, each with its stations."""
    by_bucket: dict[datetime, set[str]] = defaultdict(set)
    for station, bucket in keys:
        by_bucket[bucket].add(station)
    out: list[tuple[datetime, datetime, set[str]]] = []
    for bucket in sorted(by_bucket):
        if out and bucket - out[-1][1] <= CLUSTER_GAP:
            lo, _hi, stations = out[-1]
            out[-1] = (lo, bucket + FIVE_MIN, stations | by_bucket[bucket])
        else:
            out.append((bucket, bucket + FIVE_MIN, set(by_bucket[bucket])))
    return out


def _claim(conn: Connection, limit: int) -> set[tuple[str, datetime]]:
    d = schema.rollup_dirty
    oldest = (
        select(d.c.id)
        .order_by(d.c.bucket_start, d.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = conn.execute(
        delete(d)
        .where(d.c.id.in_(oldest.scalar_subquery()))
        .returning(d.c.station_id, d.c.bucket_start)
    )
    return {(s, b) for s, b in rows}


def _cleaned_keys(conn: Connection, keys: set[tuple[str, datetime]]) -> set[tuple[str, datetime]]:
    """Keys before the retention horizon (:mod:`its.db.horizon`) whose raw rows were deleted by
    the clean-up: their 5-minute roll-up counted more lane rows than the raw rows now hold.

    Recomputing such a key (a reading written straight into ``readings`` long after, or imported
    with ``--accept-old``) would replace a complete roll-up by one of the few rows left, so it
    is skipped. A key with no roll-up yet, or whose raw rows are all there (the clean-up deletes
    a station's bucket whole, and only once rolled up), is recomputed as usual: that is how old
    history imported for the first time gets its roll-ups."""
    limit = horizon.recorded_horizon(conn)
    old = {k for k in keys if limit is not None and k[1] < limit}
    if not old:
        return set()
    five, r = schema.rollup_5m, schema.readings
    out: set[tuple[str, datetime]] = set()
    for lo, hi, stations in _clusters(old):
        stored = conn.execute(
            select(five.c.station_id, five.c.bucket_start, five.c.lane_rows)
            .where(five.c.bucket_start >= lo, five.c.bucket_start < hi)
            .where(five.c.station_id.in_(sorted(stations)))
        )
        for station, bucket, lane_rows in stored:
            if (station, bucket) not in old:
                continue
            raw = conn.execute(
                select(func.count())
                .select_from(r)
                .where(r.c.station_id == station)
                .where(r.c.interval_start >= bucket, r.c.interval_start < bucket + FIVE_MIN)
            ).scalar_one()
            if raw < lane_rows:
                out.add((station, bucket))
    return out


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Write recomputed rows over the old ones (``ON CONFLICT DO UPDATE`` on the key): a keyed
    upsert, where deleting a batch of keys first would scan the table per key list."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for i in range(0, len(rows), 5000):
        stmt = dialect.insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["station_id", "bucket_start"],
            set_={name: stmt.excluded[name] for name in (*SUM_COLUMNS, *MAX_COLUMNS)},
        )
        conn.execute(stmt, rows[i : i + 5000])


def _recompute(
    conn: Connection,
    keys: set[tuple[str, datetime]],
    level: Level,
    select_for_range: Callable[[datetime, datetime, set[str]], Any],
) -> None:
    rows: list[dict[str, Any]] = []
    for lo, hi, stations in _clusters(keys):
        stmt = select_for_range(lo, hi, stations)
        for row in conn.execute(stmt).mappings():
            bucket = row["bucket_start"]
            if isinstance(bucket, str):
                bucket = datetime.fromisoformat(bucket)
            if bucket.tzinfo is None:
                bucket = bucket.replace(tzinfo=UTC)
            if (row["station_id"], bucket) in keys:
                rows.append({**row, "bucket_start": bucket})
    _upsert(conn, level.table, rows)


def refresh(conn: Connection, tz: str, *, limit: int = DEFAULT_BATCH) -> int:
    """Claim up to ``limit`` dirty keys and recompute their 5-minute, hourly and daily roll-ups
    (hours and days in zone ``tz``). The caller commits. Returns the keys claimed (0: caught up)."""
    if conn.dialect.name == "postgresql":
        # one worker at a time: a segment's row reads its stations' rows, which another
        # worker could be replacing in the same moment
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('its-rollup-worker'))"))
    claimed = _claim(conn, limit)
    if not claimed:
        return 0
    keys = {(s, b) for s, b in claimed if ROLLUP_START <= b < ROLLUP_END}
    if len(keys) < len(claimed):
        # rows written straight into readings with such times (ingest refuses them): rolling
        # them up would overflow the calendar and stall every later key behind them
        log.warning(
            "roll-up: %d key(s) outside %s..%s skipped (their raw rows are kept)",
            len(claimed) - len(keys), ROLLUP_START.date(), ROLLUP_END.date(),
        )  # fmt: skip
    cleaned = _cleaned_keys(conn, keys)
    if cleaned:
        log.warning(
            "roll-up: %d key(s) before the retention horizon skipped: their raw rows were "
            "cleaned up, so their roll-ups are final (the late rows go at the next clean-up)",
            len(cleaned),
        )
        keys -= cleaned
    if not keys:
        return len(claimed)
    r = schema.readings

    def raw(lo: datetime, hi: datetime, stations: set[str]) -> Any:
        return raw_sums_query(
            lambda ts: time_bucket(FIVE_MIN, ts),
            r.c.interval_start >= lo,
            r.c.interval_start < hi,
            r.c.station_id.in_(sorted(stations)),
        )

    _recompute(conn, keys, LEVEL_5M, raw)
    refresh_targets(conn, {b for _s, b in keys})
    finer = LEVEL_5M
    fine_keys = keys
    for level in (LEVEL_1H, LEVEL_1D):
        coarse = {(s, bucket_floor(b, level.width, tz)) for s, b in fine_keys}
        source = finer.table

        def regroup(lo: datetime, hi: datetime, stations: set[str], *, _l=level, _s=source) -> Any:
            bucket = time_bucket(_l.width, _s.c.bucket_start, tz)
            end = bucket_ceil(hi, _l.width, tz)
            return (
                select(*sums_of_sums_columns(_s, bucket))
                .where(_s.c.bucket_start >= lo, _s.c.bucket_start < end)
                .where(_s.c.station_id.in_(sorted(stations)))
                .group_by(_s.c.station_id, bucket)
            )

        # ranges start at the coarse bucket, so every fine row of a coarse bucket is summed
        _recompute(conn, coarse, level, regroup)
        finer, fine_keys = level, coarse
    return len(claimed)


def pending(conn: Connection) -> int:
    """Dirty keys logged and not yet rolled up (a key may be logged more than once)."""
    return int(conn.execute(select(func.count()).select_from(schema.rollup_dirty)).scalar_one())


def catch_up(
    engine: Engine,
    tz: str,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Refresh until the log is empty (or ``stop`` is set); one transaction per batch.
    Returns the keys processed; ``progress`` is called with each batch's count. On TimescaleDB
    the continuous aggregates are refreshed instead (:func:`its.db.caggs.catch_up`)."""
    from its.db import caggs

    with engine.connect() as conn:
        if caggs.in_use(conn):
            return caggs.catch_up(engine, tz, batch=batch, progress=progress, stop=stop)
    total = 0
    while stop is None or not stop.is_set():
        with engine.begin() as conn:
            n = refresh(conn, tz, limit=batch)
        if not n:
            break
        total += n
        if progress is not None:
            progress(n)
    return total


def rebuild(conn: Connection, tz: str | None = None) -> None:
    """Forget every roll-up and log every key that has readings again: after a change of the
    network's time zone, or after deleting raw rows that should leave the roll-ups too.

    Where the retention clean-up has deleted raw rows (a horizon is recorded), the 5-minute
    roll-ups before the horizon are all that is left of that history: they are kept, and the
    local hours and days (zone ``tz``, required then) are rebuilt from them; everything from the
    horizon on is rebuilt from the raw rows as usual. On TimescaleDB the continuous aggregates
    are re-created (docs/timescaledb.md)."""
    from its.db import caggs, rollup_sql

    if caggs.in_use(conn):
        caggs.recreate(conn)

    limit = horizon.recorded_horizon(conn)
    if limit is not None and tz is None:
        raise ValueError("raw rows were cleaned up: rebuilding needs the network's time zone")
    for level in LEVELS:
        table = level.table
        if level is LEVEL_5M and limit is not None:
            conn.execute(delete(table).where(table.c.bucket_start >= limit))
        else:
            conn.execute(delete(table))
    for table in TARGET_TABLES.values():
        if limit is not None:
            conn.execute(delete(table).where(table.c.bucket_start >= limit))
        else:
            conn.execute(delete(table))
    conn.execute(delete(schema.rollup_dirty))
    if limit is not None:
        assert tz is not None
        finer = LEVEL_5M
        for level in (LEVEL_1H, LEVEL_1D):
            # hours and days before the horizon from the kept 5-minute rows; one holding the
            # horizon is summed whole again by the worker when its newer keys are processed
            source = finer.table
            bucket = time_bucket(level.width, source.c.bucket_start, tz)
            sums = (
                select(*sums_of_sums_columns(source, bucket))
                .where(source.c.bucket_start < limit)
                .group_by(source.c.station_id, bucket)
            )
            columns = ["station_id", "bucket_start", *SUM_COLUMNS, *MAX_COLUMNS]
            conn.execute(insert(level.table).from_select(columns, sums))
            finer = level
    rollup_sql.log_all_readings(conn)


def run_worker(engine: Engine, tz: str, stop: threading.Event, *, interval_s: float = 2.0) -> None:
    """Keep the roll-ups current until ``stop`` is set: catch up, then poll the log every
    ``interval_s`` seconds (inside ``its up`` and ``its ingest``)."""
    log.info("roll-up worker started (every %.1f s)", interval_s)
    while not stop.is_set():
        try:
            catch_up(engine, tz, stop=stop)
        except Exception:  # noqa: BLE001 - a failed round is retried; the log keeps the keys
            log.exception("roll-up round failed; retrying")
        stop.wait(interval_s)
    log.info("roll-up worker stopped")
