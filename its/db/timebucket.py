"""``time_bucket(width, ts[, tz])`` as a SQLAlchemy construct compiled per backend.

- TimescaleDB: ``time_bucket(width, ts[, tz])``
- PostgreSQL: ``date_bin(width, ts, TIMESTAMPTZ '2000-01-03')`` (TimescaleDB's origin), or on local
  wall-clock time ``date_bin(width, ts AT TIME ZONE tz, TIMESTAMP '2000-01-03') AT TIME ZONE tz``
- SQLite: epoch arithmetic, or the ``its_bucket`` function registered on each connection for a
  time zone. Both return text in the form SQLAlchemy stores datetimes in
  (``YYYY-MM-DD HH:MM:SS.ffffff``), so a bucket compares equal to a stored ``bucket_start``.

The width and zone stay bound parameters (never inlined) and ``**kw`` reaches every
``compiler.process``: an inlined width plus the statement cache would hand back the previous
width's buckets.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Integer, Interval, String, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from its.db.engine import Backend
from its.db.types import UTCDateTime

_ORIGIN_EPOCH = 946_857_600  # 2000-01-03T00:00:00Z


class time_bucket(FunctionElement[Any]):  # noqa: N801 - reads like the SQL function it is
    """Start of the ``width`` bucket holding ``ts``; with ``tz``, buckets follow local time."""

    type = UTCDateTime()
    inherit_cache = True
    name = "time_bucket"

    def __init__(self, width: timedelta, ts: ColumnElement[Any], tz: str | None = None) -> None:
        if width <= timedelta(0):
            raise ValueError("bucket width must be positive")
        args: list[Any] = [
            literal(width, Interval()),
            literal(int(width.total_seconds()), Integer()),
            ts,
        ]
        if tz is not None:
            args.append(literal(tz, String()))
        super().__init__(*args)


def _render(
    element: time_bucket, compiler: SQLCompiler, width_index: int, **kw: Any
) -> tuple[str, str, str | None]:
    """Compile only the arguments this backend renders: a bound parameter that is processed
    but not written into the SQL would shift every positional (``?``) parameter after it."""
    clauses = element.clauses.clauses
    width = compiler.process(clauses[width_index], **kw)
    ts = compiler.process(clauses[2], **kw)
    tz = compiler.process(clauses[3], **kw) if len(clauses) > 3 else None
    return width, ts, tz


@compiles(time_bucket)
def _compile_postgresql(element: time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    width, ts, tz = _render(element, compiler, 0, **kw)
    if getattr(compiler.dialect, "its_backend", None) == Backend.TIMESCALEDB:
        if tz is None:
            return f"time_bucket(CAST({width} AS INTERVAL), {ts})"
        return f"time_bucket(CAST({width} AS INTERVAL), {ts}, CAST({tz} AS TEXT))"
    if tz is None:
        return f"date_bin(CAST({width} AS INTERVAL), {ts}, TIMESTAMPTZ '2000-01-03')"
    return (
        f"(date_bin(CAST({width} AS INTERVAL), {ts} AT TIME ZONE CAST({tz} AS TEXT), "
        f"TIMESTAMP '2000-01-03') AT TIME ZONE CAST({tz} AS TEXT))"
    )


@compiles(time_bucket, "sqlite")
def _compile_sqlite(element: time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    seconds, ts, tz = _render(element, compiler, 1, **kw)
    if tz is not None:
        return f"its_bucket({seconds}, {ts}, {tz})"
    return (
        f"(datetime((CAST(strftime('%s', {ts}) AS INTEGER) - {_ORIGIN_EPOCH}) / {seconds} "
        f"* {seconds} + {_ORIGIN_EPOCH}, 'unixepoch') || '.000000')"
    )
