"""Parameters shared by the routes: bounded ids and texts, time windows, buckets and the point limit.

Every value a client sends is bounded here before it reaches the service layer or the database,
so that no input can make a route answer 5xx or do unbounded work:

- texts (ids, names, comments) have a maximum length and no control characters: PostgreSQL
  rejects a NUL byte in text, and nothing legitimate needs the others (422);
- alert ids lie in 1 .. 2^31-1, the range of the ``integer`` column on every backend (422);
- times must be ISO 8601 date-times and, once in UTC, lie in [:data:`MIN_TIME`, :data:`MAX_TIME`):
  calendar-edge dates such as 0001-01-01T00:00:00+07:00 overflow Python's and the databases'
  date arithmetic (400, like every other well-formed window that cannot be answered);
- a query that returns a series checks its number of points against :data:`MAX_POINTS` (400).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BeforeValidator, StringConstraints, WithJsonSchema
from sqlalchemy.engine import Connection

from its.errors import NotFoundError, QueryError
from its.network import Network
from its.service.traffic import data_clock

MAX_POINTS = 100_000  # a month of daily figures for 2,000 stations is 60,000
DEFAULT_SPAN = timedelta(hours=2)

#: the accepted time range, in UTC: from the Unix epoch to the start of year 2200
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)

#: alert ids are ``integer`` columns: 32-bit signed on PostgreSQL
MAX_ALERT_ID = 2**31 - 1
MAX_ID_LENGTH = 128
MAX_IDS = 200


def reject_control_characters(value: str, *, allowed: str = "") -> str:
    """``value`` unchanged, or a ValueError naming the first control character (NUL and the
    other C0/C1 controls, DEL, lone surrogates) that is not in ``allowed``."""
    for position, char in enumerate(value):
        if char not in allowed and unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(
                f"must not contain control characters (found U+{ord(char):04X} at position "
                f"{position})"
            )
    return value


#: the rule of :func:`reject_control_characters` as the OpenAPI schema states it (the check itself
#: is the function, whose message names the character; ECMA and Python regexes read it alike)
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(reject_control_characters),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_LENGTH,
            "pattern": NO_CONTROL_PATTERN,
        }
    ),
]
"""A station, segment or corridor id as a client sends it: unknown ids are a 404 later."""

AlertId = Annotated[
    int,
    Path(ge=1, le=MAX_ALERT_ID, description="The alert's id (1 .. 2^31-1)", examples=[1]),
]

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_date_time(value: Any) -> Any:
    """Only ISO 8601 date-times: pydantic alone would also read ``0`` as the epoch and a bare
    date as midnight, which the OpenAPI schema (``format: date-time``) does not promise."""
    if isinstance(value, str) and not _DATE_TIME.match(value.strip()):
        raise ValueError("must be an ISO 8601 date-time such as 2026-11-22T01:00:00Z")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_iso_date_time)]
"""A ``start``/``end`` query parameter; its range is checked by :func:`time_window`."""

_RANGE_DOC = f"{MIN_TIME:%Y-%m-%d} .. {MAX_TIME:%Y-%m-%d} UTC"
START_DOC = f"ISO 8601, UTC when no zone is given, within {_RANGE_DOC}; default end - 2 h"
END_DOC = f"ISO 8601, UTC when no zone is given, within {_RANGE_DOC}; default newest data"


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


def checked_time(name: str, ts: datetime) -> datetime:
    """``ts`` in UTC, or a QueryError when it lies outside [MIN_TIME, MAX_TIME) (converting a
    calendar-edge time such as 0001-01-01T00:00:00+07:00 to UTC would overflow)."""
    try:
        utc = as_utc(ts)
    except OverflowError:
        utc = None
    if utc is None or not MIN_TIME <= utc < MAX_TIME:
        raise QueryError(
            f"{name} ({ts.isoformat()}) is outside the accepted range "
            f"{MIN_TIME.isoformat()} .. {MAX_TIME.isoformat()} (UTC, end excluded)"
        )
    return utc


def time_window(
    conn: Connection, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    """[start, end): end defaults to the data clock (or now), start to two hours before end."""
    start = checked_time("start", start) if start else None
    end = checked_time("end", end) if end else (data_clock(conn) or datetime.now(UTC))
    start = start or end - DEFAULT_SPAN
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


class ExportLevel(StrEnum):
    """What ``/export`` and ``its export`` write: aggregates per target, or the raw readings."""

    station = "station"
    segment = "segment"
    corridor = "corridor"
    readings = "readings"


def check_known_ids(network: Network, level: str, ids: Collection[str] | None) -> None:
    """The 404 naming every id the network lacks at ``level`` (station, segment or corridor):
    the one check behind every route's ``id=``, against the network's ids computed once per
    process (:attr:`its.network.Network.station_groups`)."""
    if not ids:
        return
    known = network.station_groups[level]
    unknown = sorted({i for i in ids if i not in known})
    if unknown:
        raise NotFoundError(f"unknown {level} id(s): {', '.join(unknown)}")
