"""One station's series per lane and bucket, from the raw readings.

Roll-ups keep per-station sums only (a lane breakdown for thousands of stations and years would
multiply them by the lanes), so a lane series reads the raw rows of one station through the
reading key's index (station first): bounded by :data:`MAX_LANE_WINDOW`, and empty beyond the raw
retention. Per lane and bucket the handbook's formulas (GUIDE section 5) as for a station:

- flow q = count x 3600 / period_s, averaged over the intervals that arrived (volume normalised by
  expected / observed);
- occupancy = mean over the intervals with one;
- speed = flow-weighted harmonic mean sum(q) / sum(q / v); a single loop's missing speed is
  estimated as v = q g / (occ 1000), i.e. q / v = occ 1000 / g (g: the station's vehicle length);
- % observed = intervals that arrived / intervals expected (bucket / period).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, select
from sqlalchemy.engine import Connection

from its.contract import iso
from its.db import schema
from its.db.timebucket import time_bucket
from its.network import Station
from its.service.traffic import DEFAULT_PERIOD_S, round_or_none

#: the longest window a lane series reads (raw rows: a month of one station is ~260,000)
MAX_LANE_WINDOW = timedelta(days=31)


@dataclass(frozen=True)
class LanePoint:
    lane: int
    bucket_start: datetime
    flow_vph: float | None
    speed_kph: float | None
    occupancy: float | None
    pct_observed: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "bucket_start": iso(self.bucket_start),
            "flow_vph": round_or_none(self.flow_vph),
            "speed_kph": round_or_none(self.speed_kph),
            "occupancy": round_or_none(self.occupancy, 4),
            "pct_observed": round(self.pct_observed, 1),
        }


def _utc(conn: Connection, value: Any) -> datetime:
    """A bucket start as an aware UTC datetime (SQLite returns the stored text)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    return schema.readings.c.interval_start.type.process_result_value(value, conn.dialect)


def lane_series(
    conn: Connection,
    station: Station,
    start: datetime,
    end: datetime,
    bucket_s: int,
    tz: str | None = None,
) -> list[LanePoint]:
    """Each lane's flow, speed, occupancy and % observed per bucket over [start, end), ordered
    by bucket then lane; a lane with no reading in a bucket has no point there."""
    r = schema.readings
    bucket = time_bucket(timedelta(seconds=bucket_s), r.c.interval_start, tz)
    q = cast(r.c.count, Float) * 3600.0 / r.c.period_s
    measured = and_(r.c.speed_kph.is_not(None), r.c.speed_kph > 0)
    estimated = and_(r.c.speed_kph.is_(None), r.c.occupancy > 0, r.c.count > 0)
    g = station.vehicle_length_m
    stmt = (
        select(
            r.c.lane,
            bucket.label("bucket_start"),
            func.sum(q),
            func.count(q),
            func.sum(case((measured, q), (estimated, q), else_=None)),
            func.sum(
                case(
                    (measured, q / r.c.speed_kph),
                    (estimated, r.c.occupancy * 1000.0 / g),
                    else_=None,
                )
            ),
            func.sum(r.c.occupancy),
            func.count(r.c.occupancy),
            func.count(),
            func.max(r.c.period_s),
        )
        .where(
            r.c.station_id == station.station_id,
            r.c.interval_start >= start,
            r.c.interval_start < end,
        )
        .group_by(r.c.lane, bucket)
    )
    out = []
    for lane, b, q_sum, q_n, q_speed, q_over_v, occ_sum, occ_n, rows, period in conn.execute(stmt):
        expected = max(bucket_s / (period or DEFAULT_PERIOD_S), 1.0)
        q_over_v = float(q_over_v or 0.0)
        out.append(
            LanePoint(
                lane=int(lane),
                bucket_start=_utc(conn, b),
                flow_vph=float(q_sum) / q_n if q_n else None,
                speed_kph=float(q_speed) / q_over_v if q_over_v > 0 else None,
                occupancy=float(occ_sum) / occ_n if occ_n else None,
                pct_observed=min(100.0, 100.0 * int(rows) / expected),
            )
        )
    out.sort(key=lambda p: (p.bucket_start, p.lane))
    return out
