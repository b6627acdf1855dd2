"""Traffic aggregates from raw readings, per the handbook's definitions (GUIDE section 5).

The database does the heavy part (one grouped pass over ``readings`` per query, bucketed with the
backend's ``time_bucket``) and returns per-station sums; Python rolls them up to stations, segments
and corridors so every level uses the same formulas on every backend:

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

from sqlalchemy import Float, and_, case, cast, func, literal, select
from sqlalchemy.engine import Connection

from its.contract import iso
from its.db import schema
from its.db.timebucket import time_bucket
from its.network import Network

DEFAULT_PERIOD_S = 30


@dataclass(frozen=True)
class _Sums:
    """Per station and bucket: what the grouped SQL returns, before any division."""

    station_id: str
    bucket_start: datetime
    flow_sum: float  # sum of lane flows over all rows (veh/h)
    intervals: int  # distinct interval starts observed
    lane_rows: int  # lane intervals observed
    period_s: int
    occ_sum: float
    occ_n: int
    q_speed: float  # sum of q over lanes with a speed (measured or estimated)
    q_over_v: float  # sum of q / v over the same lanes

    @property
    def flow_vph(self) -> float | None:
        return self.flow_sum / self.intervals if self.intervals else None

    @property
    def q_speed_mean(self) -> float:
        return self.q_speed / self.intervals if self.intervals else 0.0

    @property
    def q_over_v_mean(self) -> float:
        return self.q_over_v / self.intervals if self.intervals else 0.0


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

    A window keeps this an index range scan on a large table; callers ask for the stations they
    care about (the live views pass the last hour of data time).
    """
    r = schema.readings
    end = func.max(r.c.interval_start)
    q = select(r.c.station_id, end, func.max(r.c.period_s)).group_by(r.c.station_id)
    if since is not None:
        q = q.where(r.c.interval_start >= since)
    if until is not None:
        q = q.where(r.c.interval_start <= until)
    out: dict[str, datetime] = {}
    for station_id, last, period in conn.execute(q):
        last = schema.readings.c.interval_start.type.process_result_value(last, conn.dialect)
        out[station_id] = last + timedelta(seconds=period or DEFAULT_PERIOD_S)
    return out


def station_states(conn: Connection) -> dict[str, tuple[str, datetime]]:
    """Station id -> (online | offline, when the server learnt it), from the state topic."""
    s = schema.station_status
    return {
        row.station_id: (row.state, row.updated_at)
        for row in conn.execute(select(s.c.station_id, s.c.state, s.c.updated_at))
    }


# --------------------------------------------------------------------------- the grouped pass


def _speed_terms() -> tuple[Any, Any, Any]:
    """SQL for lane flow q, and for q and q / v over the lanes whose speed is known or estimable."""
    r, st = schema.readings, schema.stations
    q = cast(r.c.count, Float) * 3600.0 / r.c.period_s
    measured = and_(r.c.speed_kph.is_not(None), r.c.speed_kph > 0)
    estimated = and_(r.c.speed_kph.is_(None), r.c.occupancy > 0, r.c.count > 0)
    q_over_v = case(
        (measured, q / r.c.speed_kph),
        (estimated, r.c.occupancy * 1000.0 / st.c.vehicle_length_m),
        else_=None,
    )
    q_with_speed = case((measured, q), (estimated, q), else_=None)
    return q, q_with_speed, q_over_v


def _station_sums(
    conn: Connection,
    start: datetime,
    end: datetime,
    bucket_s: int | None,
    *,
    station_ids: Collection[str] | None = None,
    tz: str | None = None,
) -> list[_Sums]:
    """One grouped pass over readings in [start, end); ``bucket_s=None`` makes the window one bucket."""
    r, st = schema.readings, schema.stations
    q, q_with_speed, q_over_v = _speed_terms()
    if bucket_s is None:
        bucket: Any = literal(start, schema.readings.c.interval_start.type)
    else:
        bucket = time_bucket(timedelta(seconds=bucket_s), r.c.interval_start, tz)
    bucket = bucket.label("bucket")
    stmt = (
        select(
            r.c.station_id,
            bucket,
            func.coalesce(func.sum(q), 0.0),
            func.count(func.distinct(r.c.interval_start)),
            func.count(),
            func.max(r.c.period_s),
            func.coalesce(func.sum(r.c.occupancy), 0.0),
            func.count(r.c.occupancy),
            func.coalesce(func.sum(q_with_speed), 0.0),
            func.coalesce(func.sum(q_over_v), 0.0),
        )
        .join(st, st.c.station_id == r.c.station_id)
        .where(r.c.interval_start >= start, r.c.interval_start < end)
        .group_by(r.c.station_id, bucket)
    )
    if station_ids is not None:
        stmt = stmt.where(r.c.station_id.in_(list(station_ids)))
    ts_type = schema.readings.c.interval_start.type
    out = []
    for row in conn.execute(stmt):
        b = row[1]
        if not isinstance(b, datetime) or b.tzinfo is None:
            b = ts_type.process_result_value(b, conn.dialect)
        out.append(
            _Sums(
                station_id=row[0],
                bucket_start=b,
                flow_sum=float(row[2]),
                intervals=int(row[3]),
                lane_rows=int(row[4]),
                period_s=int(row[5] or DEFAULT_PERIOD_S),
                occ_sum=float(row[6]),
                occ_n=int(row[7]),
                q_speed=float(row[8]),
                q_over_v=float(row[9]),
            )
        )
    return out


# --------------------------------------------------------------------------- roll-ups


def _combine(
    target_id: str,
    bucket_start: datetime,
    parts: list[_Sums],
    members: list[str],
    lanes: dict[str, int],
    bucket_s: float,
) -> Interval:
    """Roll station sums up to one target: mean station flow, harmonic speed, mean occupancy, and
    % observed against every lane of every station the target has (a silent station counts)."""
    flows = [p.flow_vph for p in parts if p.flow_vph is not None]
    q_speed = sum(p.q_speed_mean for p in parts)
    q_over_v = sum(p.q_over_v_mean for p in parts)
    occ_n = sum(p.occ_n for p in parts)
    period = {p.station_id: p.period_s for p in parts}
    expected = sum(
        lanes[sid] * max(bucket_s / period.get(sid, DEFAULT_PERIOD_S), 1.0) for sid in members
    )
    observed = sum(p.lane_rows for p in parts)
    return Interval(
        target_id=target_id,
        bucket_start=bucket_start,
        speed_kph=(q_speed / q_over_v) if q_over_v > 0 else None,
        flow_vph=(sum(flows) / len(flows)) if flows else None,
        occupancy=(sum(p.occ_sum for p in parts) / occ_n) if occ_n else None,
        pct_observed=min(100.0, 100.0 * observed / expected) if expected else 0.0,
    )


def _key_of(network: Network, level: str) -> dict[str, str]:
    """Station id -> the id of the station, segment or corridor it counts towards."""
    seg_of = {s.station_id: s.segment_id for s in network.stations}
    if level == "station":
        return {sid: sid for sid in seg_of}
    if level == "segment":
        return seg_of
    if level == "corridor":
        corridor = {s.segment_id: s.corridor_id for s in network.segments}
        return {sid: corridor[seg] for sid, seg in seg_of.items()}
    raise ValueError(f"unknown level {level!r}")


def roll_up(sums: list[_Sums], network: Network, level: str, bucket_s: float) -> list[Interval]:
    """Group station sums by station, segment or corridor and bucket, then combine each group."""
    lanes = {s.station_id: s.lanes for s in network.stations}
    key_of = _key_of(network, level)
    members: dict[str, list[str]] = defaultdict(list)
    for sid, key in key_of.items():
        members[key].append(sid)
    groups: dict[tuple[str, datetime], list[_Sums]] = defaultdict(list)
    for s in sums:
        if s.station_id in key_of:
            groups[(key_of[s.station_id], s.bucket_start)].append(s)
    return [
        _combine(target, b, parts, members[target], lanes, bucket_s)
        for (target, b), parts in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


def bucket_tz(network: Network, bucket_s: int) -> str | None:
    """Hourly and daily buckets follow the network's local clock (a report's "day" is a local
    day, also across DST); shorter ones are zone-independent and cheaper unzoned."""
    return network.timezone if bucket_s >= 3600 else None


def aggregate(
    conn: Connection,
    network: Network,
    level: str,
    start: datetime,
    end: datetime,
    bucket_s: int,
    *,
    target_ids: Collection[str] | None = None,
) -> list[Interval]:
    """Flow, speed, occupancy and % observed per target and bucket over [start, end)."""
    station_ids: Collection[str] | None = None
    if target_ids is not None:
        wanted = set(target_ids)
        if level == "station":
            station_ids = wanted
        elif level == "segment":
            station_ids = [s.station_id for s in network.stations if s.segment_id in wanted]
        else:
            segs = {s.segment_id for s in network.segments if s.corridor_id in wanted}
            station_ids = [s.station_id for s in network.stations if s.segment_id in segs]
    sums = _station_sums(
        conn, start, end, bucket_s, station_ids=station_ids, tz=bucket_tz(network, bucket_s)
    )
    out = roll_up(sums, network, level, bucket_s)
    if target_ids is not None:
        out = [i for i in out if i.target_id in set(target_ids)]
    return out


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
    """Each target's traffic over the whole window [start, end), as one bucket (the live view)."""
    sums = _station_sums(conn, start, end, None)
    width = (end - start).total_seconds()
    return {i.target_id: i for i in roll_up(sums, network, level, width)}
