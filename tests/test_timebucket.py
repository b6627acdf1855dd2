"""The time_bucket construct gives the same buckets on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from its.db import schema
from its.db.timebucket import time_bucket

T0 = datetime(2026, 3, 7, 22, 47, 30, tzinfo=UTC)


def _seed(engine: Engine) -> None:
    rows = [
        {
            "station_id": "JKT-SDR-N-001",
            "lane": 1,
            "interval_start": T0 + timedelta(minutes=7 * i),
            "period_s": 30,
            "count": i,
            "received_at": T0,
        }
        for i in range(600)
    ]
    with engine.begin() as conn:
        conn.execute(insert(schema.readings), rows)


def _buckets(engine: Engine, width: timedelta, tz: str | None) -> list[tuple[datetime, int]]:
    b = time_bucket(width, schema.readings.c.interval_start, tz).label("b")
    q = select(b, func.sum(schema.readings.c.count)).group_by(b).order_by(b)
    with engine.connect() as conn:
        return [(r[0], int(r[1])) for r in conn.execute(q)]


def _expected(width: timedelta, tz: str | None) -> list[tuple[datetime, int]]:
    from zoneinfo import ZoneInfo

    origin = datetime(2000, 1, 3)
    out: dict[datetime, int] = {}
    for i in range(600):
        ts = T0 + timedelta(minutes=7 * i)
        zone = ZoneInfo(tz or "UTC")
        local = ts.astimezone(zone).replace(tzinfo=None)
        start = origin + ((local - origin) // width) * width
        key = start.replace(tzinfo=zone).astimezone(UTC)
        out[key] = out.get(key, 0) + i
    return sorted(out.items())


@pytest.mark.parametrize(
    "width", [timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1), timedelta(days=1)]
)
@pytest.mark.parametrize("tz", [None, "Asia/Jakarta", "America/New_York"])
def test_buckets_match_reference(engine: Engine, width: timedelta, tz: str | None) -> None:
    _seed(engine)
    assert _buckets(engine, width, tz) == _expected(width, tz)


def test_width_change_is_not_cached(engine: Engine) -> None:
    """An inlined width plus the statement cache would return the previous width's buckets."""
    _seed(engine)
    five = _buckets(engine, timedelta(minutes=5), None)
    hour = _buckets(engine, timedelta(hours=1), None)
    assert len(five) > len(hour)
    assert _buckets(engine, timedelta(minutes=5), None) == five


def test_dst_days_in_new_york_are_local_days(engine: Engine) -> None:
    """2026-03-08 is 23 hours long in New York; its daily bucket starts at local midnight."""
    _seed(engine)
    days = [b for b, _ in _buckets(engine, timedelta(days=1), "America/New_York")]
    assert datetime(2026, 3, 8, 5, tzinfo=UTC) in days  # 00:00 EST
    assert datetime(2026, 3, 9, 4, tzinfo=UTC) in days  # 00:00 EDT
