"""Readings written straight into the store, for tests of the service layer, API and alerts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from its.contract import LaneReading, Observation
from its.db.writes import insert_readings, reading_rows
from its.network import Network, Station

SpeedFn = Callable[[Station, datetime], float | None]


def observation(
    st: Station, t: datetime, speed_kph: float, count: int = 10, period_s: int = 30
) -> Observation:
    """An observation whose lanes agree with each other: occ = q g / (v 1000)."""
    q = count * 3600 / period_s
    occ = min(1.0, q * st.vehicle_length_m / (speed_kph * 1000))
    single = st.detector == "single-loop"
    lanes = [
        LaneReading(
            lane=lane,
            count=count,
            occupancy=round(occ, 4),
            speed_kph=None if single else speed_kph,
        )
        for lane in range(1, st.lanes + 1)
    ]
    return Observation(
        v=1, station_id=st.station_id, interval_start=t, period_s=period_s, lanes=lanes
    )


def seed(
    engine: Engine,
    network: Network,
    start: datetime,
    minutes: float,
    speed: SpeedFn,
    *,
    stations: Iterable[Station] | None = None,
    count: int = 10,
    period_s: int = 30,
) -> int:
    """Write readings for ``stations`` (default all) every period from ``start``; ``speed``
    returning None leaves that station silent for that interval. Returns rows written."""
    rows = []
    now = datetime.now(UTC)
    n = int(minutes * 60 // period_s)
    for st in stations if stations is not None else network.stations:
        for i in range(n):
            t = start + timedelta(seconds=i * period_s)
            v = speed(st, t)
            if v is not None:
                rows.extend(reading_rows(observation(st, t, v, count, period_s), now))
    with engine.begin() as conn:
        return insert_readings(conn, rows)


def aligned(minutes_ago: float = 60, every: int = 5) -> datetime:
    """A UTC time about ``minutes_ago`` before now, aligned to ``every`` minutes."""
    t = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return t.replace(minute=t.minute - t.minute % every, second=0, microsecond=0)
