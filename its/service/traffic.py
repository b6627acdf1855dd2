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

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.engine import Connection

from its.contract import iso
from its.db import rollup, schema
from its.db.timebucket import time_bucket
from its.network import Network

DEFAULT_PERIOD_S = 30


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
        return {
            "bucket_start": iso(self.bucket_start),
            "speed_kph": round_or_none(self.speed_kph),
            "flow_vph": round_or_none(self.flow_vph),
            "occupancy": round_or_none(self.occupancy, 4),
            "pct_observed": round(self.pct_observed, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of one aggregate row, with the target's id."""
        return {"id": self.target_id, **self.to_point()}


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
    roll-ups' newest interval per bucket and raw rows only for the window's ragged edges and what
    is not rolled up yet, not an hour of raw rows.
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
        sums = station_sums_query(conn, since, until + timedelta(microseconds=1), 300).subquery()
        q = select(
            sums.c.station_id, func.max(sums.c.last_start), func.max(sums.c.period_s)
        ).group_by(sums.c.station_id)
    out: dict[str, datetime] = {}
    for station_id, last, period in conn.execute(q):
        last = _as_utc(conn, last)
        out[station_id] = last + timedelta(seconds=period or DEFAULT_PERIOD_S)
    return out


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
    bucket: Any,
    station_ids: Collection[str] | None,
) -> Any:
    """Station sums straight from ``readings`` in [start, end), grouped by ``bucket``."""
    r = schema.readings
    stmt = (
        select(*rollup.raw_sums_columns(bucket))
        .where(r.c.interval_start >= start, r.c.interval_start < end)
        .group_by(r.c.station_id, bucket)
    )
    if station_ids is not None:
        stmt = stmt.where(r.c.station_id.in_(sorted(station_ids)))
    return stmt


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


def _dirty_since(conn: Connection, station_ids: Collection[str] | None) -> datetime | None:
    """The oldest 5-minute bucket logged dirty (for these stations): roll-ups are exact before
    it; from it on the raw rows answer."""
    d = schema.rollup_dirty
    stmt = select(func.min(d.c.bucket_start))
    if station_ids is not None:
        stmt = stmt.where(d.c.station_id.in_(sorted(station_ids)))
    return conn.execute(stmt).scalar()


def station_sums_query(
    conn: Connection,
    start: datetime,
    end: datetime,
    bucket_s: int | None,
    *,
    tz: str | None = None,
    station_ids: Collection[str] | None = None,
    source: str = "rollup",
) -> Any:
    """A query of per station and bucket sums over [start, end) (columns: ROLLUP_COLUMNS).

    With ``source="rollup"`` the window is split into whole buckets of the stored levels and the
    rest; everything from the oldest dirty bucket on (what the worker has not rolled up yet, a
    few seconds' worth when it keeps up) is read from the raw rows, so an answer is exactly what
    the raw rows give, however far behind the worker is. ``bucket_s=None`` makes the window one
    bucket (the live view), read raw.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {SOURCES}")
    if bucket_s is None:
        bucket: Any = literal(start, schema.readings.c.interval_start.type)
        return _raw_piece(start, end, bucket, station_ids)
    raw_bucket = time_bucket(timedelta(seconds=bucket_s), schema.readings.c.interval_start, tz)
    if source == "raw":
        return _raw_piece(start, end, raw_bucket, station_ids)
    dirty = _dirty_since(conn, station_ids)
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
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    return schema.readings.c.interval_start.type.process_result_value(value, conn.dialect)


def _intervals(
    conn: Connection,
    query: Any,
    network: Network,
    level: str,
    bucket_s: float,
    target_ids: Collection[str] | None = None,
) -> list[Interval]:
    """Apply the handbook's formulas to per-target sums (rollup.TARGET_COLUMNS): the one place
    they are written, whether the sums were stored by the worker or summed for this query.

    Flow is the mean station flow, speed sum(q) / sum(q / v), occupancy the mean over lane
    rows, % observed the lane intervals seen over those expected of every lane of every station
    of the target (a silent station counts, with the default period).
    """
    c = query.selected_columns
    if target_ids is not None:
        query = query.where(c.target_id.in_(sorted(target_ids)))
    lanes_of = _target_lanes(network, level)
    default_expected = max(bucket_s / DEFAULT_PERIOD_S, 1.0)
    buckets: dict[Any, datetime] = {}  # many targets share a bucket: convert each once
    out = []
    for target, b, flow, n, q_speed, q_over_v, occ, occ_n, seen, exp_own, lanes in conn.execute(
        query.with_only_columns(*(c[name] for name in rollup.TARGET_COLUMNS))
    ):
        if target not in lanes_of:
            continue
        bucket = buckets.get(b)
        if bucket is None:
            bucket = buckets[b] = _as_utc(conn, b)
        q_over_v, occ_n = float(q_over_v), int(occ_n)
        expected = (lanes_of[target] - int(lanes)) * default_expected + float(exp_own)
        out.append(
            Interval(
                target_id=target,
                bucket_start=bucket,
                speed_kph=float(q_speed) / q_over_v if q_over_v > 0 else None,
                flow_vph=float(flow) / n if n else None,
                occupancy=float(occ) / occ_n if occ_n else None,
                pct_observed=min(100.0, 100.0 * int(seen) / expected) if expected else 0.0,
            )
        )
    out.sort(key=lambda i: (i.bucket_start, i.target_id))
    return out


def _roll_up(
    conn: Connection,
    sums: Any,
    network: Network,
    level: str,
    bucket_s: float,
    target_ids: Collection[str] | None = None,
) -> list[Interval]:
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
) -> list[Interval]:
    """5-minute segment or corridor figures: whole buckets from the stored target roll-ups (up to
    the oldest dirty bucket), the rest through the station path."""
    dirty = _dirty_since(conn, station_ids)
    stored_end = max(start, min(end, dirty)) if dirty is not None else end
    lo = rollup.bucket_ceil(start, rollup.FIVE_MIN, None)
    hi = rollup.bucket_floor(stored_end, rollup.FIVE_MIN, None)
    if lo >= hi:
        lo = hi = start
    t = rollup.TARGET_TABLES[level]
    out = []
    if lo < hi:
        query = select(*(t.c[name] for name in rollup.TARGET_COLUMNS)).where(
            t.c.bucket_start >= lo, t.c.bucket_start < hi
        )
        out += _intervals(conn, query, network, level, 300, target_ids)
    for a, b in ((start, lo), (hi, end)):
        if a < b:
            sums = station_sums_query(conn, a, b, 300, station_ids=station_ids)
            out += _roll_up(conn, sums, network, level, 300, target_ids)
    out.sort(key=lambda i: (i.bucket_start, i.target_id))
    return out


def _target_lanes(network: Network, level: str) -> dict[str, int]:
    """Each target's lanes over all its stations: the denominator of % observed."""
    seg_of = {s.station_id: s.segment_id for s in network.stations}
    corridor = {s.segment_id: s.corridor_id for s in network.segments}
    out: dict[str, int] = defaultdict(int)
    for st in network.stations:
        if level == "station":
            key = st.station_id
        elif level == "segment":
            key = seg_of[st.station_id]
        elif level == "corridor":
            key = corridor[seg_of[st.station_id]]
        else:
            raise ValueError(f"unknown level {level!r}")
        out[key] += st.lanes
    return dict(out)


def bucket_tz(network: Network, bucket_s: int) -> str | None:
    """Hourly and daily buckets follow the network's local clock (a report's "day" is a local
    day, also across DST); shorter ones are zone-independent and cheaper unzoned."""
    return network.timezone if bucket_s >= 3600 else None


def _stations_of(
    network: Network, level: str, target_ids: Collection[str] | None
) -> Collection[str] | None:
    if target_ids is None:
        return None
    wanted = set(target_ids)
    if level == "station":
        return wanted
    if level == "segment":
        return [s.station_id for s in network.stations if s.segment_id in wanted]
    segs = {s.segment_id for s in network.segments if s.corridor_id in wanted}
    return [s.station_id for s in network.stations if s.segment_id in segs]


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


def window(
    conn: Connection, network: Network, level: str, start: datetime, end: datetime
) -> dict[str, Interval]:
    """Each target's traffic over the whole window [start, end), as one bucket (the live view:
    a few minutes of raw rows, read through the time index)."""
    sums = station_sums_query(conn, start, end, None)
    width = (end - start).total_seconds()
    return {i.target_id: i for i in _roll_up(conn, sums, network, level, width)}
