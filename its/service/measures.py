"""PeMS performance measures per segment and corridor direction, and daily travel-time reliability.

Built on the segment figures of :func:`its.service.traffic.aggregate` (which reads the
roll-ups), so a measure is always consistent with the flow and speed the API and dashboard show:
segment measures apply the formulas below to its rows; corridor measures read the same segment
sums and add them up per direction in SQL (:func:`corridor_sums_query`), since a city's day at
5 minutes is half a million segment figures, too many for Python. Per segment and
bucket, with q the mean station flow [veh/h], v the harmonic mean speed [km/h], L the segment's
stored length [km] (``segments.length_m``, 0.1 m), v_f its free-flow speed, V_t the threshold
speed and h the hours of the bucket inside the queried window (GUIDE section 5):

- VKT [veh-km] = q L h;  VHT [veh-h] = q L h / v;
- delay [veh-h] = q h max(0, L/v - L/V), against V = v_f and against V = V_t (60 km/h default);
- travel time [min] = 60 L / v;  TTI = travel time / free-flow travel time = v_f / v.

A segment without a speed has no VHT, delay, travel time or TTI (null, never 0), except that a
bucket with zero flow has zero VKT, VHT and delay.

A **corridor** is read per direction of travel: its segments in ``seq`` order. Its travel time is
the sum of its segments' L / v. A segment with no speed in a bucket (no data, or nothing to
measure) is filled with its free-flow travel time, as PeMS fills a route's missing detectors with
imputed values, and the row's ``pct_observed`` (the lane-weighted share of expected lane intervals
that arrived, a silent segment counting 0) and ``segments_observed`` say how much was filled. A
bucket where no segment of the direction has a speed has no travel time at all. VKT, VHT and
delays are the sums over the segments (VHT and delay of a filled segment use its free-flow speed).

**Reliability** per corridor direction and local day (the network's zone, DST-aware) is computed
over the day's 5-minute corridor travel times: mean, 95th percentile (linear interpolation between
ranks, as PostgreSQL's ``percentile_cont``), Buffer Index = (TT95 - TTmean) / TTmean and Planning
Time Index = TT95 / TTfree.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import Float, bindparam, case, cast, func, select, union_all
from sqlalchemy.engine import Connection

from its import metrics
from its.contract import iso
from its.db import rollup, schema
from its.network import Network, Segment
from its.service import traffic

DEFAULT_THRESHOLD_KPH = 60.0
FIVE_MIN_S = 300

#: the columns a ``measures`` selection can pick, in answer order
SEGMENT_MEASURES = (
    "flow_vph",
    "speed_kph",
    "occupancy",
    "pct_observed",
    "vkt_veh_km",
    "vht_veh_h",
    "delay_ff_veh_h",
    "delay_veh_h",
    "travel_time_min",
    "free_flow_time_min",
    "tti",
)
#: corridors have no occupancy (a mean over segments measures nothing), but count segments
CORRIDOR_MEASURES = (
    *(m for m in SEGMENT_MEASURES if m != "occupancy"),
    "segments",
    "segments_observed",
)
MEASURES = tuple(dict.fromkeys((*SEGMENT_MEASURES, *CORRIDOR_MEASURES)))
_DIGITS = {"occupancy": 4, "tti": 3, "travel_time_min": 3, "free_flow_time_min": 3}


@dataclass(frozen=True)
class Measures:
    """One segment, or one corridor direction, over one bucket."""

    target_id: str
    direction: str | None
    bucket_start: datetime
    values: dict[str, float | int | None]

    def to_dict(self, columns: Sequence[str]) -> dict[str, Any]:
        """The JSON form with the picked columns, rounded for display (None stays None)."""
        out: dict[str, Any] = {"id": self.target_id}
        if self.direction is not None:
            out["direction"] = self.direction
        out["bucket_start"] = iso(self.bucket_start)
        for name in columns:
            if name in self.values:
                out[name] = _round(self.values[name], _DIGITS.get(name, 2))
        return out


@dataclass(frozen=True)
class DailyReliability:
    """One corridor direction over one local day."""

    corridor_id: str
    direction: str
    day: str
    day_start: datetime
    buckets: int
    pct_observed: float
    free_flow_time_min: float
    tt_mean_min: float | None
    tt95_min: float | None
    tti_mean: float | None
    buffer_index: float | None
    planning_time_index: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.corridor_id,
            "direction": self.direction,
            "day": self.day,
            "day_start": iso(self.day_start),
            "buckets": self.buckets,
            "pct_observed": round(self.pct_observed, 1),
            "free_flow_time_min": round(self.free_flow_time_min, 3),
            "tt_mean_min": _round(self.tt_mean_min, 3),
            "tt95_min": _round(self.tt95_min, 3),
            "tti_mean": _round(self.tti_mean, 3),
            "buffer_index": _round(self.buffer_index, 3),
            "planning_time_index": _round(self.planning_time_index, 3),
        }


def _round(value: float | int | None, digits: int) -> float | int | None:
    if value is None or isinstance(value, int):
        return value
    return round(value, digits)


def length_km(segment: Segment) -> float:
    """The segment's length as stored (``segments.length_m``, rounded to 0.1 m), so the API and
    the SQL views (migration 0005) use the same number."""
    return round(segment.length_m, 1) / 1000.0


# --------------------------------------------------------------------------- buckets


class BucketHours(dict[datetime, float]):
    """Each bucket's hours inside [start, end), computed on first use: a local day is 23 to 25
    hours on DST changes, and a window that cuts a bucket counts only the part it covers."""

    def __init__(self, network: Network, bucket_s: int, start: datetime, end: datetime) -> None:
        super().__init__()
        self._tz = traffic.bucket_tz(network, bucket_s)
        self._width = timedelta(seconds=bucket_s)
        self._start, self._end = start, end

    def __missing__(self, b: datetime) -> float:
        b_end = rollup.bucket_ceil(b + timedelta(microseconds=1), self._width, self._tz)
        hours = (min(self._end, b_end) - max(self._start, b)).total_seconds() / 3600.0
        self[b] = hours
        return hours


# --------------------------------------------------------------------------- segments


def segment_values(
    flow: float | None,
    speed: float | None,
    occupancy: float | None,
    pct_observed: float,
    length: float,
    free_flow_kph: float,
    hours: float,
    threshold_kph: float,
) -> dict[str, float | None]:
    """Every measure of one segment and bucket from its flow and speed (the formulas above)."""
    has_speed = speed is not None and speed > 0
    zero_flow = flow is not None and flow == 0

    def per_bucket(value: float | None) -> float | None:
        if zero_flow:
            return 0.0
        return None if value is None else value * hours

    return {
        "flow_vph": flow,
        "speed_kph": speed if has_speed else None,
        "occupancy": occupancy,
        "pct_observed": pct_observed,
        "vkt_veh_km": None if flow is None else metrics.vkt(flow, length) * hours,
        "vht_veh_h": per_bucket(metrics.vht(flow, length, speed)),
        "delay_ff_veh_h": per_bucket(metrics.delay_vh(flow, length, speed, free_flow_kph)),
        "delay_veh_h": per_bucket(metrics.delay_vh(flow, length, speed, threshold_kph)),
        "travel_time_min": _minutes(metrics.travel_time_s(length, speed)),
        "free_flow_time_min": _minutes(metrics.travel_time_s(length, free_flow_kph)),
        "tti": metrics.tti(speed, free_flow_kph),
    }


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60.0


def segment_measures(
    conn: Connection,
    network: Network,
    start: datetime,
    end: datetime,
    bucket_s: int,
    *,
    segment_ids: Collection[str] | None = None,
    threshold_kph: float = DEFAULT_THRESHOLD_KPH,
) -> list[Measures]:
    """Each segment's measures per bucket over [start, end) (rows where it has data)."""
    hours = BucketHours(network, bucket_s, start, end)
    out = []
    for i in traffic.aggregate(
        conn, network, "segment", start, end, bucket_s, target_ids=segment_ids
    ):
        seg = network.segment(i.target_id)
        values = segment_values(
            i.flow_vph,
            i.speed_kph,
            i.occupancy,
            i.pct_observed,
            length_km(seg),
            seg.free_flow_kph,
            hours[i.bucket_start],
            threshold_kph,
        )
        out.append(Measures(i.target_id, None, i.bucket_start, values))
    return out


# --------------------------------------------------------------------------- corridors


@dataclass(frozen=True)
class CorridorDirection:
    """One corridor in one direction of travel: the unit of corridor measures."""

    corridor_id: str
    direction: str
    segments: tuple[Segment, ...]
    lanes: dict[str, int]  # segment id -> lanes of its stations (weights of % observed)

    @cached_property
    def free_flow_hours(self) -> float:
        return sum(length_km(s) / s.free_flow_kph for s in self.segments)

    @cached_property
    def length_km(self) -> float:
        return sum(length_km(s) for s in self.segments)

    @cached_property
    def total_lanes(self) -> int:
        return sum(self.lanes.values())


def corridor_directions(
    network: Network,
    corridor_ids: Collection[str] | None = None,
    direction: str | None = None,
) -> list[CorridorDirection]:
    """The corridor directions asked for, each with its segments in driving order."""
    lanes: dict[str, int] = defaultdict(int)
    for st in network.stations:
        lanes[st.segment_id] += st.lanes
    groups: dict[tuple[str, str], list[Segment]] = defaultdict(list)
    for seg in network.segments:
        if corridor_ids is not None and seg.corridor_id not in corridor_ids:
            continue
        if direction is not None and seg.direction != direction:
            continue
        groups[(seg.corridor_id, seg.direction)].append(seg)
    return [
        CorridorDirection(
            c,
            d,
            tuple(sorted(segs, key=lambda s: s.seq)),
            {s.segment_id: lanes[s.segment_id] for s in segs},
        )
        for (c, d), segs in sorted(groups.items())
    ]


def _stations_of(network: Network, ways: Sequence[CorridorDirection]) -> list[str]:
    segments = {s.segment_id for w in ways for s in w.segments}
    return [st.station_id for st in network.stations if st.segment_id in segments]


def _segment_sums(
    conn: Connection,
    network: Network,
    start: datetime,
    end: datetime,
    bucket_s: int,
    ways: Sequence[CorridorDirection],
    restrict: bool,
) -> Any:
    """Per segment and bucket sums (rollup.TARGET_COLUMNS) over [start, end), as
    ``traffic.aggregate`` reads them at segment level: 5-minute buckets from the stored segment
    roll-ups up to the oldest bucket not rolled up yet, the rest (and other widths) from the
    station sums (roll-ups, and raw rows where they do not reach)."""
    station_ids = _stations_of(network, ways) if restrict else None

    def from_stations(a: datetime, b: datetime) -> Any:
        tz = traffic.bucket_tz(network, bucket_s)
        sums = traffic.station_sums_query(conn, a, b, bucket_s, tz=tz, station_ids=station_ids)
        return rollup.target_sums_query(sums.subquery("station_sums"), "segment", bucket_s)

    if bucket_s != FIVE_MIN_S:
        return from_stations(start, end)
    d = schema.rollup_dirty
    oldest = select(func.min(d.c.bucket_start))
    if station_ids is not None:
        oldest = oldest.where(d.c.station_id.in_(sorted(station_ids)))
    dirty = conn.execute(oldest).scalar()
    stored_end = max(start, min(end, dirty)) if dirty is not None else end
    lo = rollup.bucket_ceil(start, rollup.FIVE_MIN, None)
    hi = rollup.bucket_floor(stored_end, rollup.FIVE_MIN, None)
    if lo >= hi:
        return from_stations(start, end)
    t = rollup.TARGET_TABLES["segment"]
    stored = select(*(t.c[name] for name in rollup.TARGET_COLUMNS)).where(
        t.c.bucket_start >= lo, t.c.bucket_start < hi
    )
    if restrict:
        stored = stored.where(
            t.c.target_id.in_(sorted(s.segment_id for w in ways for s in w.segments))
        )
    pieces = [stored, *(from_stations(a, b) for a, b in ((start, lo), (hi, end)) if a < b)]
    return pieces[0] if len(pieces) == 1 else union_all(*pieces)


def corridor_sums_query(
    conn: Connection,
    network: Network,
    start: datetime,
    end: datetime,
    bucket_s: int,
    ways: Sequence[CorridorDirection],
    threshold_kph: float,
    *,
    restrict: bool,
) -> Any:
    """Per corridor, direction and bucket, the sums of its segments' terms, in SQL.

    The segment figures are those of ``traffic.aggregate`` at segment level (the same station
    sums, from the roll-ups and the raw rows where they are not rolled up yet, and the same
    ``rollup.target_sums_query``); each segment's flow q, speed v (or free flow v_f where it has
    none) and length L then give per-hour terms that add up per direction: q L, q L / v, the
    delays, and L / v - L / v_f (the extra time over free flow). Python multiplies by the
    bucket's hours and adds the direction's free-flow time (:func:`corridor_measures`).
    """
    st, sg = schema.stations, schema.segments
    seg = _segment_sums(conn, network, start, end, bucket_s, ways, restrict).subquery("seg_sums")
    lanes = (
        select(st.c.segment_id, func.sum(st.c.lanes).label("lanes"))
        .group_by(st.c.segment_id)
        .subquery("segment_lanes")
    )
    zero, one = cast(0.0, Float), cast(1.0, Float)
    length = sg.c.length_m / 1000.0
    free_pace = 1.0 / sg.c.free_flow_kph  # hours per km
    has_speed = seg.c.q_over_v > 0
    default_expected = max(bucket_s / traffic.DEFAULT_PERIOD_S, 1.0)
    expected = (lanes.c.lanes - seg.c.lanes_reporting) * default_expected + seg.c.expected_own
    share = 100.0 * seg.c.lane_rows / expected
    pct = case((expected <= 0, zero), (share > 100.0, cast(100.0, Float)), else_=share)
    # each segment's terms once (pace = 1 / v in h/km, free flow where it has no speed)
    terms = (
        select(
            sg.c.corridor_id,
            sg.c.direction,
            seg.c.bucket_start,
            (seg.c.flow / seg.c.stations * length).label("q_l"),
            length.label("l"),
            case((has_speed, seg.c.q_over_v / seg.c.q_speed), else_=free_pace).label("pace"),
            free_pace.label("free_pace"),
            case((has_speed, one), else_=zero).label("observed"),
            (pct * lanes.c.lanes).label("pct_lanes"),
        )
        .select_from(
            seg.join(sg, sg.c.segment_id == seg.c.target_id).join(
                lanes, lanes.c.segment_id == seg.c.target_id
            )
        )
        .where(seg.c.stations > 0)
    )
    if restrict:
        terms = terms.where(sg.c.corridor_id.in_(sorted({w.corridor_id for w in ways})))
        terms = terms.where(sg.c.direction.in_(sorted({w.direction for w in ways})))
    t = terms.subquery("segment_terms")
    threshold_pace = 1.0 / bindparam("threshold_kph", threshold_kph, type_=Float)

    def positive(x: Any) -> Any:
        return case((x > 0, x), else_=zero)

    return select(
        t.c.corridor_id,
        t.c.direction,
        t.c.bucket_start,
        func.sum(t.c.q_l).label("q_l"),
        func.sum(t.c.l).label("l_flow"),
        func.sum(t.c.q_l * t.c.pace).label("q_l_over_v"),
        func.sum(t.c.q_l * positive(t.c.pace - t.c.free_pace)).label("delay_ff"),
        func.sum(t.c.q_l * positive(t.c.pace - threshold_pace)).label("delay_t"),
        func.sum(t.c.l * (t.c.pace - t.c.free_pace)).label("extra_h"),
        func.sum(t.c.observed).label("observed"),
        func.sum(t.c.pct_lanes).label("pct_lanes"),
    ).group_by(t.c.corridor_id, t.c.direction, t.c.bucket_start)


def corridor_measures(
    conn: Connection,
    network: Network,
    start: datetime,
    end: datetime,
    bucket_s: int,
    *,
    corridor_ids: Collection[str] | None = None,
    direction: str | None = None,
    threshold_kph: float = DEFAULT_THRESHOLD_KPH,
) -> list[Measures]:
    """Each corridor direction's measures per bucket over [start, end) (buckets where any of its
    segments has data). The segments are summed in SQL (:func:`corridor_sums_query`): a city's
    day at 5 minutes is half a million segment figures, too many to add up in Python."""
    ways = {
        (w.corridor_id, w.direction): w
        for w in corridor_directions(network, corridor_ids, direction)
    }
    if not ways:
        return []
    restrict = corridor_ids is not None or direction is not None
    query = corridor_sums_query(
        conn, network, start, end, bucket_s, list(ways.values()), threshold_kph, restrict=restrict
    )
    hours = BucketHours(network, bucket_s, start, end)
    buckets: dict[Any, datetime] = {}
    out = []
    for (
        c,
        d,
        b,
        q_l,
        l_flow,
        q_l_v,
        delay_ff,
        delay_t,
        extra_h,
        observed,
        pct_lanes,
    ) in conn.execute(query):
        way = ways.get((c, d))
        if way is None:
            continue
        bucket = buckets.get(b)
        if bucket is None:
            bucket = buckets[b] = _as_utc(conn, b)
        h = hours[bucket]
        free_h = way.free_flow_hours
        has_tt = observed > 0
        tt_h = free_h + float(extra_h) if has_tt else None
        lanes = way.total_lanes
        values: dict[str, float | int | None] = {
            "flow_vph": float(q_l) / float(l_flow) if l_flow else None,
            "speed_kph": way.length_km / tt_h if tt_h else None,
            "pct_observed": float(pct_lanes) / lanes if lanes else 0.0,
            "vkt_veh_km": float(q_l) * h,
            "vht_veh_h": float(q_l_v) * h if has_tt else None,
            "delay_ff_veh_h": float(delay_ff) * h if has_tt else None,
            "delay_veh_h": float(delay_t) * h if has_tt else None,
            "travel_time_min": tt_h * 60.0 if tt_h is not None else None,
            "free_flow_time_min": free_h * 60.0,
            "tti": tt_h / free_h if tt_h is not None and free_h > 0 else None,
            "segments": len(way.segments),
            "segments_observed": int(observed),
        }
        out.append(Measures(c, d, bucket, values))
    out.sort(key=lambda m: (m.bucket_start, m.target_id, m.direction or ""))
    return out


def _as_utc(conn: Connection, value: Any) -> datetime:
    """A bucket start as an aware UTC datetime (SQLite returns the stored text)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    return schema.readings.c.interval_start.type.process_result_value(value, conn.dialect)


# --------------------------------------------------------------------------- reliability


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p`` quantile (0..1) with linear interpolation between ranks (PostgreSQL's
    ``percentile_cont``, numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = p * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def local_days(network: Network, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) widened to whole local days of the network's zone."""
    day = timedelta(days=1)
    return (
        rollup.bucket_floor(start, day, network.timezone),
        rollup.bucket_ceil(end, day, network.timezone),
    )


def reliability(
    conn: Connection,
    network: Network,
    start: datetime,
    end: datetime,
    *,
    corridor_ids: Collection[str] | None = None,
    direction: str | None = None,
) -> list[DailyReliability]:
    """Per corridor direction and local day in [start, end) (whole local days): the travel-time
    reliability of its 5-minute travel times."""
    tz = network.timezone
    ways = {
        (w.corridor_id, w.direction): w
        for w in corridor_directions(network, corridor_ids, direction)
    }
    rows = corridor_measures(
        conn, network, start, end, FIVE_MIN_S, corridor_ids=corridor_ids, direction=direction
    )
    day = timedelta(days=1)
    times: dict[tuple[str, str, datetime], list[float]] = defaultdict(list)
    pct: dict[tuple[str, str, datetime], float] = defaultdict(float)
    for r in rows:
        key = (r.target_id, r.direction or "", rollup.bucket_floor(r.bucket_start, day, tz))
        pct[key] += float(r.values["pct_observed"] or 0.0)
        tt = r.values["travel_time_min"]
        if tt is not None:
            times[key].append(float(tt))
    out = []
    for key in sorted(pct):
        corridor, way_dir, day_start = key
        day_end = rollup.bucket_ceil(day_start + timedelta(microseconds=1), day, tz)
        expected = (day_end - day_start).total_seconds() / FIVE_MIN_S
        tts = times.get(key, [])
        free = ways[(corridor, way_dir)].free_flow_hours * 60.0
        mean = sum(tts) / len(tts) if tts else None
        tt95 = percentile(tts, 0.95) if tts else None
        out.append(
            DailyReliability(
                corridor_id=corridor,
                direction=way_dir,
                day=day_start.astimezone(network.tz).date().isoformat(),
                day_start=day_start,
                buckets=len(tts),
                pct_observed=min(100.0, pct[key] / expected),
                free_flow_time_min=free,
                tt_mean_min=mean,
                tt95_min=tt95,
                tti_mean=None if mean is None or free <= 0 else mean / free,
                buffer_index=metrics.buffer_index(tt95, mean),
                planning_time_index=metrics.planning_time_index(tt95, free),
            )
        )
    return out


def pick(requested: Iterable[str] | None, available: Sequence[str]) -> list[str]:
    """The measure columns to answer: those requested (in the canonical order), or all."""
    if not requested:
        return list(available)
    wanted = set(requested)
    unknown = wanted - set(available)
    if unknown:
        raise ValueError(f"unknown measure(s): {', '.join(sorted(unknown))}")
    return [m for m in available if m in wanted]
