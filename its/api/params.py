"""Query parameters shared by the routes: time windows, bucket widths and the point limit.

Analysts get a 400 that says what to change rather than a slow or enormous answer: every query
that returns a series checks its number of points against :data:`MAX_POINTS` first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy.engine import Connection

from its.errors import QueryError
from its.service.traffic import data_clock

MAX_POINTS = 100_000  # a month of daily figures for 2,000 stations is 60,000
DEFAULT_SPAN = timedelta(hours=2)


class Bucket(StrEnum):
    m5 = "5m"
    m15 = "15m"
    h1 = "1h"
    d1 = "1d"

    @property
    def seconds(self) -> int:
        return {"5m": 300, "15m": 900, "1h": 3600, "1d": 86400}[self.value]


class Level(StrEnum):
    station = "station"
    segment = "segment"
    corridor = "corridor"


def as_utc(ts: datetime) -> datetime:
    """Times without a zone are read as UTC, as the wire contract's times are."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def time_window(
    conn: Connection, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    """[start, end): end defaults to the data clock (or now), start to two hours before end."""
    end = as_utc(end) if end else (data_clock(conn) or datetime.now(UTC))
    start = as_utc(start) if start else end - DEFAULT_SPAN
    if start >= end:
        raise QueryError(f"start ({start.isoformat()}) must be before end ({end.isoformat()})")
    return start, end


def check_points(start: datetime, end: datetime, bucket_s: int, targets: int) -> None:
    """Refuse a query whose answer would exceed :data:`MAX_POINTS` rows, saying how to narrow it."""
    buckets = -(-int((end - start).total_seconds()) // bucket_s)
    points = buckets * max(targets, 1)
    if points > MAX_POINTS:
        raise QueryError(
            f"this query would return up to {points} points ({buckets} buckets x {targets} "
            f"targets), more than the limit of {MAX_POINTS}: use a shorter window, a wider "
            "bucket or fewer targets"
        )
