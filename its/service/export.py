"""Exports without the point limit: aggregates and raw readings over any window, slice by slice.

``/aggregates`` answers at most 100,000 points because it builds its whole answer in memory. An
export streams instead: the window is cut into **time slices** on bucket boundaries, each slice is
answered by the same service code as ``/aggregates`` (:func:`its.service.traffic.aggregate_rows`, so
the rows are the same, formulas and roll-ups included), and its rows are handed on before the next
slice is read. Memory is one slice's rows, however long the window:

- aggregates: a slice holds at most :data:`SLICE_POINTS` points (buckets x targets). Slices start
  and end on bucket boundaries (local hours and days where the bucket is local), so no bucket is
  split between two slices and every row is exactly the row ``/aggregates`` gives; the window's
  own ragged edges stay where they are, as in ``/aggregates``;
- raw readings: a slice holds about :data:`SLICE_READINGS` rows (from the network's lane count
  and a 30-s period), fetched :data:`FETCH_ROWS` at a time through a server-side cursor on
  PostgreSQL, so a denser feed than expected still does not fill memory.

Empty stretches (a window reaching years before the first reading) are skipped with two index
lookups instead of thousands of empty slices: where a slice found nothing, the next one starts at
the bucket of the next stored reading or 5-minute roll-up.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from its.db import rollup, schema
from its.formats import Format, encoder
from its.network import Network
from its.service import traffic

SLICE_POINTS = 20_000
SLICE_READINGS = 100_000
FETCH_ROWS = 20_000
NOMINAL_PERIOD_S = 30
READINGS_SLICE_BOUNDS = (timedelta(minutes=1), timedelta(days=1))

#: (name, kind) of the columns of an aggregates export, in order; the values are those of a
#: ``/aggregates`` row (its ``to_dict``), with ``bucket_start`` as a time
AGGREGATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("bucket_start", "time"),
    ("speed_kph", "float"),
    ("flow_vph", "float"),
    ("occupancy", "float"),
    ("pct_observed", "float"),
)

#: the columns of a raw readings export: the ``readings`` table as docs/storage.md documents it
READING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("station_id", "text"),
    ("lane", "int"),
    ("interval_start", "time"),
    ("period_s", "int"),
    ("count", "int"),
    ("occupancy", "float"),
    ("speed_kph", "float"),
    ("status", "text"),
    ("received_at", "time"),
)

Progress = Callable[[datetime, int], None]
"""Called after each slice with the time covered so far and the rows the slice gave."""


@dataclass(frozen=True)
class Chunk:
    """One slice's rows (tuples in the export's column order) and where the slice ends."""

    rows: list[tuple[Any, ...]]
    until: datetime


def aggregate_rows_rounded(rows: Iterable[traffic.IntervalRow]) -> list[tuple[Any, ...]]:
    """Aggregates as rows of :data:`AGGREGATE_COLUMNS`, rounded as ``/aggregates`` rounds them
    (:func:`its.service.traffic.row_dicts`; tests/test_export.py holds the two to the same
    values). One comprehension over plain tuples: an export is hundreds of thousands of rows,
    and an object or a function call per row was most of its time."""
    return [
        (
            target,
            bucket,
            None if speed is None else round(speed, 1),
            None if flow is None else round(flow, 1),
            None if occupancy is None else round(occupancy, 4),
            round(pct, 1),
        )
        for target, bucket, speed, flow, occupancy, pct in rows
    ]


def _first_at_or_after(conn: Connection, column: Any, at: datetime) -> datetime | None:
    value = conn.execute(select(func.min(column)).where(column >= at)).scalar()
    if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
        return value
    return column.type.process_result_value(value, conn.dialect)  # SQLite's text


def next_reading(conn: Connection, at: datetime) -> datetime | None:
    """The first reading's time at or after ``at``, or None (an index lookup)."""
    return _first_at_or_after(conn, schema.readings.c.interval_start, at)


def next_data(conn: Connection, at: datetime) -> datetime | None:
    """The first time at or after ``at`` with a stored reading or 5-minute roll-up (roll-ups
    outlive the raw rows' retention), or None: two index lookups."""
    times = [
        t
        for t in (
            next_reading(conn, at),
            _first_at_or_after(conn, schema.rollup_5m.c.bucket_start, at),
        )
        if t is not None
    ]
    return min(times) if times else None


def _slices(
    conn: Connection,
    start: datetime,
    end: datetime,
    width: timedelta,
    tz: str | None,
    per_slice: int,
    probe: Callable[[Connection, datetime], datetime | None] = next_data,
) -> Iterator[tuple[datetime, datetime]]:
    """[lo, hi) slices of [start, end) ending on boundaries of ``width`` buckets (in ``tz``),
    about ``per_slice`` buckets each. The caller sends back (``.send``) whether a slice had rows;
    after an empty one the next slice starts at the bucket of the next stored data."""
    lo = start
    found = False
    while lo < end:
        if not found:
            nxt = probe(conn, lo)
            if nxt is None or nxt >= end:
                return
            lo = max(lo, rollup.bucket_floor(nxt, width, tz))
        hi = rollup.bucket_floor(lo + width * per_slice, width, tz)
        hi = min(end, max(hi, rollup.bucket_ceil(lo + timedelta(microseconds=1), width, tz)))
        found = bool((yield lo, hi))
        lo = hi


def _drive(
    slices: Iterator[tuple[datetime, datetime]],
    read: Callable[[datetime, datetime], list[tuple[Any, ...]]],
    progress: Progress | None,
) -> Iterator[Chunk]:
    """Read each slice, telling the slicer whether it had rows."""
    try:
        lo, hi = next(slices)
    except StopIteration:
        return
    while True:
        rows = read(lo, hi)
        if progress is not None:
            progress(hi, len(rows))
        if rows:
            yield Chunk(rows, hi)
        try:
            lo, hi = slices.send(bool(rows))
        except StopIteration:
            return


def aggregate_chunks(
    conn: Connection,
    network: Network,
    level: str,
    start: datetime,
    end: datetime,
    bucket_s: int,
    *,
    target_ids: Collection[str] | None = None,
    progress: Progress | None = None,
) -> Iterator[Chunk]:
    """The rows ``traffic.aggregate`` gives for [start, end), slice by slice, in its order
    (bucket, then target), each slice at most about :data:`SLICE_POINTS` rows."""
    targets = len(target_ids) if target_ids else len(_target_ids(network, level))
    per_slice = max(1, SLICE_POINTS // max(targets, 1))
    width = timedelta(seconds=bucket_s)
    tz = traffic.bucket_tz(network, bucket_s)

    def read(lo: datetime, hi: datetime) -> list[tuple[Any, ...]]:
        return aggregate_rows_rounded(
            traffic.aggregate_rows(conn, network, level, lo, hi, bucket_s, target_ids=target_ids)
        )

    yield from _drive(_slices(conn, start, end, width, tz, per_slice), read, progress)


def _target_ids(network: Network, level: str) -> Sequence[str]:
    if level == "station":
        return [s.station_id for s in network.stations]
    if level == "segment":
        return [s.segment_id for s in network.segments]
    return [c.corridor_id for c in network.corridors]


def readings_slice_width(network: Network, station_ids: Collection[str] | None) -> timedelta:
    """A slice of raw readings holding about :data:`SLICE_READINGS` rows at a 30-s period."""
    wanted = set(station_ids) if station_ids is not None else None
    lanes = sum(s.lanes for s in network.stations if wanted is None or s.station_id in wanted)
    seconds = SLICE_READINGS * NOMINAL_PERIOD_S / max(lanes, 1)
    low, high = READINGS_SLICE_BOUNDS
    return min(high, max(low, timedelta(seconds=seconds)))


def reading_chunks(
    conn: Connection,
    network: Network,
    start: datetime,
    end: datetime,
    *,
    station_ids: Collection[str] | None = None,
    progress: Progress | None = None,
) -> Iterator[Chunk]:
    """Raw ``readings`` rows in [start, end) ordered by time, station and lane, as stored (no
    formula applied), in chunks of at most :data:`FETCH_ROWS` rows."""
    r = schema.readings
    width = readings_slice_width(network, station_ids)
    query = select(*(r.c[name] for name, _ in READING_COLUMNS)).order_by(
        r.c.interval_start, r.c.station_id, r.c.lane
    )
    if station_ids is not None:
        query = query.where(r.c.station_id.in_(sorted(station_ids)))
    slices = _slices(conn, start, end, width, None, 1, next_reading)
    try:
        lo, hi = next(slices)
    except StopIteration:
        return
    while True:
        result = conn.execution_options(yield_per=FETCH_ROWS).execute(
            query.where(r.c.interval_start >= lo, r.c.interval_start < hi)
        )
        count = 0
        try:
            for part in result.partitions():
                rows = [tuple(row) for row in part]
                count += len(rows)
                yield Chunk(rows, hi)
        finally:
            result.close()  # a stopped export closes its server-side cursor now, not at GC
        if progress is not None:
            progress(hi, count)
        try:
            lo, hi = slices.send(count > 0)
        except StopIteration:
            return


# --------------------------------------------------------------------------- one export


@dataclass(frozen=True)
class ExportRequest:
    """What to export, already checked (times in UTC, ids known): the API and ``its export``
    check their input their own way, then share everything from here on."""

    level: str  # station | segment | corridor | readings
    start: datetime
    end: datetime
    bucket_s: int | None = None  # None for readings
    ids: tuple[str, ...] | None = None

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        return READING_COLUMNS if self.level == "readings" else AGGREGATE_COLUMNS


def chunks(
    conn: Connection, network: Network, req: ExportRequest, progress: Progress | None = None
) -> Iterator[Chunk]:
    """The rows of ``req``, chunk by chunk."""
    if req.level == "readings":
        return reading_chunks(
            conn, network, req.start, req.end, station_ids=req.ids, progress=progress
        )
    if req.bucket_s is None:
        raise ValueError("an aggregates export needs a bucket")
    return aggregate_chunks(
        conn,
        network,
        req.level,
        req.start,
        req.end,
        req.bucket_s,
        target_ids=req.ids,
        progress=progress,
    )


def export_bytes(
    engine: Engine,
    network: Network,
    req: ExportRequest,
    fmt: Format,
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """The encoded export, piece by piece, read on a connection of its own: on PostgreSQL one
    read-only REPEATABLE READ transaction, so every slice sees the same snapshot of the data
    (readings arriving meanwhile are in none of it, rather than in some slices)."""
    with _snapshot(engine) as conn:
        enc = encoder(fmt, req.columns)
        yield enc.begin()
        for chunk in chunks(conn, network, req, progress):
            data = enc.encode(chunk.rows)
            if data:
                yield data
        yield enc.end()


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with (
            engine.connect().execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            ) as conn,
            conn.begin(),
        ):
            yield conn
    else:
        with engine.connect() as conn:
            yield conn
