"""Traffic aggregates per the handbook's definitions (GUIDE section 5).

The database does all the grouping: per-station sums come from the stored roll-ups (5 min, local
hour, local day; :mod:`its.db.rollup`), with raw readings only for what they do not cover (ragged
window edges and buckets not rolled up yet), and one more SQL grouping rolls stations up to
segments and corridors. Python then applies the formulas, in :func:`_roll_up` only, so every level,
bucket and backend uses the same ones:

- lane flow q = count x 3600 / period_s; station flow = sum over lanes, averaged over the intervals
  observed in the bucket (that is the "volume normalised by expected / observed" rule);
- occupancy = mean over lanes and intervals;
- speed = flow-weighted harmonic mean, sum(q) / sum(q / v). Where a single loop reports no speed,
  v = q g / (occ 1000), so q / v = occ 1000 / g: the estimate needs no division by a zero flow;
- % observed = lane intervals seen / lane intervals expected (bucket / period x lanes).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import func, select, type_coerce, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.types import NullType

from its.contract import iso
from its.db import horizon, rollup, schema
from its.db.engine import BINARY_RESULTS
from its.db.timebucket import time_bucket
from its.network import Network

DEFAULT_PERIOD_S = 30


#: One target over one bucket as a plain tuple, in :class:`Interval`'s field order: what
#: :func:`aggregate_rows` returns (a tuple costs a fraction of a frozen dataclass, and an answer
#: can be 60,000 rows).
IntervalRow = tuple[str, datetime, float | None, float | None, float | None, float]


@dataclass(frozen=True)
class Interval:
    """One target (station, segment or corridor) over one bucket."""

    target_id: str
    bucket_start: datetime
    speed_kph: float | None
    flow_vph: float | None
    occupancy: float | None
    pct_observed: float

    def to_point(self) -> dict[str, Any]:
        """The JSON form of one point of a series (the target is implied)."""
        return row_dicts([self.row()], with_id=False)[0]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of one aggregate row, with the target's id."""
        return row_dicts([self.row()])[0]

    def row(self) -> IntervalRow:
        return (
            self.target_id, self.bucket_start, self.speed_kph, self.flow_vph, self.occupancy,
            self.pct_observed,
        )  # fmt: skip


def row_dicts(rows: Iterable[IntervalRow], *, with_id: bool = True) -> list[dict[str, Any]]:
    """The JSON form of rows (``{"id", "bucket_start", ...}``, without ``id`` for the points of
    one target's series): the one place their rounding is written. Each bucket's time is
    written once; thousands of rows share a few hundred buckets."""
    isos: dict[datetime, str | None] = {}
    out: list[dict[str, Any]] = []
    append = out.append
    last: Any = None
    text: str | None = None
    # one dict display per row (several times faster than filling a dict key by key), and the
    # bucket's text looked up only when the bucket changes (rows come by bucket)
    if with_id:
        for target, bucket, speed, flow, occupancy, pct in rows:
            if bucket is not last:
                last = bucket
                text = isos.get(bucket) or isos.setdefault(bucket, iso(bucket))
            append(
                {
                    "id": target,
                    "bucket_start": text,
                    "speed_kph": None if speed is None else round(speed, 1),
                    "flow_vph": None if flow is None else round(flow, 1),
                    "occupancy": None if occupancy is None else round(occupancy, 4),
                    "pct_observed": round(pct, 1),
                }
            )
        return out
    for _target, bucket, speed, flow, occupancy, pct in rows:
        if bucket is not last:
            last = bucket
            text = isos.get(bucket) or isos.setdefault(bucket, iso(bucket))
        append(
            {
                "bucket_start": text,
                "speed_kph": None if speed is None else round(speed, 1),
                "flow_vph": None if flow is None else round(flow, 1),
                "occupancy": None if occupancy is None else round(occupancy, 4),
                "pct_observed": round(pct, 1),
            }
        )
    return out


@dataclass(frozen=True)
class SegmentInterval:
    """A segment over one bucket: what the congestion rule and the live map read."""

    segment_id: str
    bucket_start: datetime
    speed_kph: float | None
    flow_vph: float | None
    occupancy: float | None
    pct_observed: float


def round_or_none(value: float | None, digits: int = 1) -> float | None:
    """Round for display; a missing value stays missing (None, never 0)."""
    return None if value is None else round(value, digits)


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- clocks and status


def data_clock(conn: Connection, *, now: datetime | None = None) -> datetime | None:
    """The end of the newest interval stored, capped at wall-clock ``now``.

    Live views and the alerts evaluator run on this clock rather than the wall clock, because the
    simulator replays history at 60x and a real feed can lag: "the last five minutes" means the
    last five minutes of data.
    """
    wall = now or _now()
    r = schema.readings
    row = conn.execute(
        select(r.c.interval_start, r.c.period_s)
        .where(r.c.interval_start <= wall)
        .order_by(r.c.interval_start.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return min(row[0] + timedelta(seconds=row[1]), wall)


def station_last_seen(
    conn: Connection, *, since: datetime | None = None, until: datetime | None = None
) -> dict[str, datetime]:
    """Station id -> end of its newest stored interval (only stations seen in the window).

    With a window (the live views pass the last hour of data time) it reads the 5-minute
    roll-ups (:func:`_last_seen_query`) and raw rows only for what is not rolled up yet, not an
    hour of raw rows.
    """
    r = schema.readings
    if since is None or until is None:
        end = func.max(r.c.interval_start)
        q = select(r.c.station_id, end, func.max(r.c.period_s)).group_by(r.c.station_id)
        if since is not None:
            q = q.where(r.c.interval_start >= since)
        if until is not None:
            q = q.where(r.c.interval_start <= until)
    else:
        q = _last_seen_query(conn, since, until)
    out: dict[str, datetime] = {}
    for station_id, last, period in conn.execute(q):
        last = _as_utc(conn, last)
        out[station_id] = last + timedelta(seconds=period or DEFAULT_PERIOD_S)
    return out


def _last_seen_query(conn: Connection, since: datetime, until: datetime) -> Any:
    """Each station's newest interval start in [since, until] and its longest period.

    A 5-minute roll-up row keeps its bucket's newest interval start (``last_start``), so whole
    rolled-up buckets answer from ``rollup_5m``, including the bucket ``since`` falls in: a
    bucket whose newest start is before ``since`` has nothing in the window, one whose newest
    start is at or after it has that start in the window. Raw rows answer only from the oldest
    dirty bucket on (what the worker has not rolled up: seconds' worth when it keeps up) and
    for the bucket ``until`` falls in.
    """
    r, five = schema.readings, schema.rollup_5m
    end = until + timedelta(microseconds=1)
    dirty = _dirty_since(conn, None)
    stored_end = rollup.bucket_floor(min(end, dirty) if dirty else end, rollup.FIVE_MIN, None)
    lo = rollup.bucket_floor(since, rollup.FIVE_MIN, None)
    pieces = []
    if lo < stored_end:
        pieces.append(
            select(
                five.c.station_id.label("station_id"),
                five.c.last_start.label("last_start"),
                five.c.period_s.label("period_s"),
            ).where(
                five.c.bucket_start >= lo,
                five.c.bucket_start < stored_end,
                five.c.last_start >= since,
            )
        )
    raw_from = max(since, stored_end)
    if raw_from < end:
        pieces.append(
            select(
                r.c.station_id.label("station_id"),
                func.max(r.c.interval_start).label("last_start"),
                func.max(r.c.period_s).label("period_s"),
            )
            .where(r.c.interval_start >= raw_from, r.c.interval_start < end)
            .group_by(r.c.station_id)
        )
    both = union_all(*pieces).subquery("seen") if len(pieces) > 1 else pieces[0].subquery("seen")
    return select(
        both.c.station_id, func.max(both.c.last_start), func.max(both.c.period_s)
    ).group_by(both.c.station_id)


def station_states(conn: Connection) -> dict[str, tuple[str, datetime]]:
    """Station id -> (online | offline, when the server learnt it), from the state topic."""
    s = schema.station_status
    return {
        row.station_id: (row.state, row.updated_at)
        for row in conn.execute(select(s.c.station_id, s.c.state, s.c.updated_at))
    }


# --------------------------------------------------------------------------- station sums

# Where the station sums come from: "rollup" reads the stored roll-ups (and the raw rows only for
# what they do not cover yet), "raw" re-reads the raw rows (the reference the tests and the
# benchmark compare against).
SOURCES = ("rollup", "raw")


def _raw_piece(
    start: datetime,
    end: datetime,
    bucket_of: Callable[[Any], Any],
    station_ids: Collection[str] | None,
) -> Any:
    """Station sums straight from ``readings`` in [start, end), per ``bucket_of(ts)``."""
    r = schema.readings
    where = [r.c.interval_start >= start, r.c.interval_start < end]
    if station_ids is not None:
        where.append(r.c.station_id.in_(sorted(station_ids)))
    return rollup.raw_sums_query(bucket_of, *where)


def _stored_piece(
    level: rollup.Level,
    start: datetime,
    end: datetime,
    bucket_s: int,
    tz: str | None,
    station_ids: Collection[str] | None,
) -> Any:
    """Station sums from a stored level's rows starting in [start, end), regrouped to the
    requested bucket where it is coarser than the level's."""
    t = level.table
    if int(level.width.total_seconds()) == bucket_s:
        stmt = select(*(t.c[name] for name in ROLLUP_COLUMNS))
    else:
        bucket = time_bucket(timedelta(seconds=bucket_s), t.c.bucket_start, tz)
        stmt = select(*rollup.sums_of_sums_columns(t, bucket)).group_by(t.c.station_id, bucket)
    stmt = stmt.where(t.c.bucket_start >= start, t.c.bucket_start < end)
    if station_ids is not None:
        stmt = stmt.where(t.c.station_id.in_(sorted(station_ids)))
    return stmt


ROLLUP_COLUMNS = ("station_id", "bucket_start", *rollup.SUM_COLUMNS, *rollup.MAX_COLUMNS)


def _usable_levels(bucket_s: int, stored: tuple[rollup.Level, ...]) -> list[rollup.Level]:
    """Stored levels (this backend's: :func:`its.db.rollup.stored_levels`) whose buckets nest in
    the requested one, coarsest first (hours and days are local, as requested buckets of an hour
    or more are: :func:`bucket_tz`)."""
    out = []
    for level in reversed(stored):
        width = int(level.width.total_seconds())
        if bucket_s % width == 0 and (level.local == (bucket_s >= 3600) or not level.local):
            out.append(level)
    return out


def _pieces(
    start: datetime, end: datetime, levels: list[rollup.Level], tz: str | None
) -> list[tuple[rollup.Level | None, datetime, datetime]]:
    """Cover [start, end) with whole buckets of the coarsest stored level, its ragged edges with
    the next finer level, and what no level covers (partial 5-minute buckets) with raw rows."""
    if start >= end:
        return []
    if not levels:
        return [(None, start, end)]
    level, finer = levels[0], levels[1:]
    zone = tz if level.local else None
    lo = rollup.bucket_ceil(start, level.width, zone)
    hi = rollup.bucket_floor(end, level.width, zone)
    if lo >= hi:
        return _pieces(start, end, finer, tz)
    return [*_pieces(start, lo, finer, tz), (level, lo, hi), *_pieces(hi, end, finer, tz)]


def _dirty_since(
    conn: Connection, station_ids: Collection[str] | None, raw_from: datetime | None = None
) -> datetime | None:
    """The oldest 5-minute bucket logged dirty (for these stations) at or after ``raw_from``
    (the retention horizon): roll-ups are exact before it; from it on the raw rows answer."""
    d = schema.rollup_dirty
    stmt = select(func.min(d.c.bucket_start))
    if station_ids is not None:
        stmt = stmt.where(d.c.station_id.in_(sorted(station_ids)))
    if raw_from is not None:
        stmt = stmt.where(d.c.bucket_start >= raw_from)
    return conn.execute(stmt).scalar()


def _beyond_retention(
    start: datetime, end: datetime, raw_from: datetime | None
) -> tuple[datetime, datetime]:
    """The window with its edges before the retention horizon widened to whole 5-minute
    buckets: raw rows there may be gone, so the roll-ups answer, at 5-minute resolution."""
    if raw_from is None:
        return start, end
    if start < raw_from:
        start = rollup.bucket_floor(start, rollup.FIVE_MIN, None)
    if end < raw_from:
        end = rollup.bucket_ceil(end, rollup.FIVE_MIN, None)
    return start, end


def station_sums_query(
    conn: Connection,
    start: datetime,
    end: datetime,
    bucket_s: int,
    *,
    tz: str | None = None,
    station_ids: Collection[str] | None = None,
    source: str = "rollup",
) -> Any:
    """A query of per station and bucket sums over [start, end) (columns: ROLLUP_COLUMNS).

    With ``source="rollup"`` the window is split into whole buckets of the stored levels and the
    rest; everything from the oldest dirty bucket on (what the worker has not rolled up yet, a
    few seconds' worth when it keeps up) is read from the raw rows, so an answer is exactly what
    the raw rows give, however far behind the worker is.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {SOURCES}")
    width = timedelta(seconds=bucket_s)

    def raw_bucket(ts: Any) -> Any:
        return time_bucket(width, ts, tz)

    if source == "raw":
        return _raw_piece(start, end, raw_bucket, station_ids)
    raw_from = horizon.recorded_horizon(conn)
    start, end = _beyond_retention(start, end, raw_from)
    dirty = _dirty_since(conn, station_ids, raw_from)
    stored_end = max(start, min(end, dirty)) if dirty is not None else end
    levels = _usable_levels(bucket_s, rollup.stored_levels(conn))
    pieces = _pieces(start, stored_end, levels, tz)
    if stored_end < end:
        pieces.append((None, stored_end, end))
    selects = [
        _raw_piece(lo, hi, raw_bucket, station_ids)
        if level is None
        else _stored_piece(level, lo, hi, bucket_s, tz, station_ids)
        for level, lo, hi in pieces
    ]
    if len(selects) == 1:
        return selects[0]
    both = union_all(*selects).subquery("pieces")
    return select(*rollup.sums_of_sums_columns(both, both.c.bucket_start)).group_by(
        both.c.station_id, both.c.bucket_start
    )


# --------------------------------------------------------------------------- roll-ups


def _as_utc(conn: Connection, value: Any) -> datetime:
    """A time as the driver returned it (aware datetime, or SQLite's text) as an aware UTC
    datetime."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return schema.readings.c.interval_start.type.process_result_value(value, conn.dialect)


def _intervals(
    conn: Connection,
    query: Any,
    network: Network,
    level: str,
    bucket_s: float,
    target_ids: Collection[str] | None = None,
) -> list[IntervalRow]:
    """Apply the handbook's formulas to per-target sums (rollup.TARGET_COLUMNS): the one place
    they are written, whether the sums were stored by the worker or summed for this query.

    Flow is the mean station flow, speed sum(q) / sum(q / v), occupancy the mean over lane
    rows, % observed the lane intervals seen over those expected of every lane of every station
    of the target (a silent station counts, with the default period).
    """
    c = query.selected_columns
    if target_ids is not None:
        query = query.where(c.target_id.in_(sorted(target_ids)))
    lanes_of = network.target_lanes[level]
    default_expected = max(bucket_s / DEFAULT_PERIOD_S, 1.0)
    buckets: dict[Any, datetime] = {}  # many targets share a bucket: convert each once
    out: list[IntervalRow] = []
    append = out.append
    # ordered by the database so the final sort (kept: it defines the order on every
    # backend) runs over sorted input
    # The bucket comes back as the driver returns it (NullType: no per-row conversion) and is
    # converted once per bucket; rows are fetched at once (iterating fetches one at a time).
    columns = [
        type_coerce(c[name], NullType()) if name == "bucket_start" else c[name]
        for name in rollup.TARGET_COLUMNS
    ]
    query = (
        query.with_only_columns(*columns)
        .order_by(c.bucket_start, c.target_id)
        .execution_options(**{BINARY_RESULTS: True})
    )
    # The DBAPI's own rows: every column is converted below, so SQLAlchemy's Row objects (a
    # third of this function's time at 144,000 rows) would add nothing.
    result = conn.execute(query)
    try:
        fetched = result.cursor.fetchall() if result.cursor is not None else []
    finally:
        result.close()
    last_b: Any = None
    bucket: datetime | None = None
    for target, b, flow, n, q_speed, q_over_v, occ, occ_n, seen, exp_own, lanes in fetched:
        all_lanes = lanes_of.get(target)
        if all_lanes is None:
            continue
        if b != last_b:  # rows come by bucket: one lookup per bucket, not per row
            last_b = b
            bucket = buckets.get(b)
            if bucket is None:
                bucket = buckets[b] = _as_utc(conn, b)
        q_over_v, occ_n = float(q_over_v), int(occ_n)
        expected = (all_lanes - int(lanes)) * default_expected + float(exp_own)
        append(
            (
                target,
                bucket,
                float(q_speed) / q_over_v if q_over_v > 0 else None,
                float(flow) / n if n else None,
                float(occ) / occ_n if occ_n else None,
                min(100.0, 100.0 * int(seen) / expected) if expected else 0.0,
            )
        )
    out.sort(key=_ORDER)
    return out


_ORDER = itemgetter(1, 0)  # bucket, then target


def _roll_up(
    conn: Connection,
    sums: Any,
    network: Network,
    level: str,
    bucket_s: float,
    target_ids: Collection[str] | None = None,
) -> list[IntervalRow]:
    """Roll station sums up to stations, segments or corridors in SQL, then apply the formulas."""
    query = rollup.target_sums_query(sums.subquery("station_sums"), level, bucket_s)
    return _intervals(conn, query, network, level, bucket_s, target_ids)


def _stored_targets(
    conn: Connection,
    network: Network,
    level: str,
    start: datetime,
    end: datetime,
    target_ids: Collection[str] | None,
    station_ids: Collection[str] | None,
) -> list[IntervalRow]:
    """5-minute segment or corridor figures: whole buckets from the stored target roll-ups (up to
    the oldest dirty bucket), the rest through the station path."""
    raw_from = horizon.recorded_horizon(conn)
    start, end = _beyond_retention(start, end, raw_from)
    dirty = _dirty_since(conn, station_ids, raw_from)
    stored_end = max(start, min(end, dirty)) if dirty is not None else end
    lo = rollup.bucket_ceil(start, rollup.FIVE_MIN, None)
    hi = rollup.bucket_floor(stored_end, rollup.FIVE_MIN, None)
    if lo >= hi:
        lo = hi = start
    t = rollup.TARGET_TABLES[level]
    parts = []
    if lo < hi:
        query = select(*(t.c[name] for name in rollup.TARGET_COLUMNS)).where(
            t.c.bucket_start >= lo, t.c.bucket_start < hi
        )
        parts.append(_intervals(conn, query, network, level, 300, target_ids))
    for a, b in ((start, lo), (hi, end)):
        if a < b:
            sums = station_sums_query(conn, a, b, 300, station_ids=station_ids)
            parts.append(_roll_up(conn, sums, network, level, 300, target_ids))
    if len(parts) == 1:
        return parts[0]  # sorted by _intervals
    out = [row for part in parts for row in part]
    out.sort(key=_ORDER)
    return out


def bucket_tz(network: Network, bucket_s: int) -> str | None:
    """Hourly and daily buckets follow the network's local clock (a report's "day" is a local
    day, also across DST); shorter ones are zone-independent and cheaper unzoned."""
    return network.timezone if bucket_s >= 3600 else None


def _stations_of(
    network: Network, level: str, target_ids: Collection[str] | None
) -> Collection[str] | None:
    if target_ids is None:
        return None
    groups = network.station_groups[level]
    return sorted({s for t in set(target_ids) for s in groups.get(t, ())})


def aggregate_rows(
    conn: Connection,
    network: Network,
    level: str,
    start: datetime,
    end: datetime,
    bucket_s: int,
    *,
    target_ids: Collection[str] | None = None,
    source: str = "rollup",
) -> list[IntervalRow]:
    """:func:`aggregate`'s rows as plain tuples (:data:`IntervalRow`), for callers that turn
    many rows into something else (the API's JSON, exports) without an object per row."""
    if level not in ("station", "segment", "corridor"):
        raise ValueError(f"unknown level {level!r}")
    station_ids = _stations_of(network, level, target_ids)
    if source == "rollup" and bucket_s == 300 and level in rollup.TARGET_TABLES:
        return _stored_targets(conn, network, level, start, end, target_ids, station_ids)
    sums = station_sums_query(
        conn,
        start,
        end,
        bucket_s,
        tz=bucket_tz(network, bucket_s),
        station_ids=station_ids,
        source=source,
    )
    return _roll_up(conn, sums, network, level, bucket_s, target_ids)


def aggregate(
    conn: Connection,
    network: Network,
    level: str,
    start: datetime,
    end: datetime,
    bucket_s: int,
    *,
    target_ids: Collection[str] | None = None,
    source: str = "rollup",
) -> list[Interval]:
    """Flow, speed, occupancy and % observed per target and bucket over [start, end).

    ``source="raw"`` re-reads the raw rows instead of the roll-ups; the answers are the same
    (tests/test_rollups.py), only slower."""
    rows = aggregate_rows(
        conn, network, level, start, end, bucket_s, target_ids=target_ids, source=source
    )
    return [Interval(*row) for row in rows]


def segment_buckets(
    conn: Connection,
    network: Network,
    start: datetime,
    end: datetime,
    bucket_s: int = 300,
    segment_ids: Collection[str] | None = None,
) -> list[SegmentInterval]:
    """Each segment's bucketed traffic over [start, end): the congestion rule's input."""
    return [
        SegmentInterval(
            segment_id=i.target_id,
            bucket_start=i.bucket_start,
            speed_kph=i.speed_kph,
            flow_vph=i.flow_vph,
            occupancy=i.occupancy,
            pct_observed=i.pct_observed,
        )
        for i in aggregate(conn, network, "segment", start, end, bucket_s, target_ids=segment_ids)
    ]
