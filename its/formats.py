"""Streaming encoders for exports: CSV, NDJSON and Parquet, chunk by chunk.

An export is written as it is read (its/service/export.py), so each encoder turns one chunk of
rows into bytes at a time and keeps nothing but the current chunk: ``begin()`` (a CSV header),
``encode(rows)`` per chunk, ``end()`` (the Parquet footer). The API streams those bytes as the
response body; ``its export`` writes them to a file or stdout. Both use these classes, so a file
from either is the same file.

Values are those of the API: times are UTC ISO 8601 with ``Z`` in CSV and NDJSON (as every JSON
answer writes them) and ``timestamp[us, UTC]`` in Parquet; a missing value is an empty CSV field,
JSON ``null`` or a Parquet null, never 0.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import orjson

from its.contract import iso

Columns = Sequence[tuple[str, str]]
"""(name, kind) per column; kind is ``text``, ``time``, ``int`` or ``float``."""

PARQUET_ROW_GROUP_ROWS = 50_000


class Format(StrEnum):
    csv = "csv"
    ndjson = "ndjson"
    parquet = "parquet"


MEDIA_TYPES = {
    Format.csv: "text/csv; charset=utf-8",
    Format.ndjson: "application/x-ndjson",
    Format.parquet: "application/vnd.apache.parquet",
}


class Encoder(Protocol):
    """Bytes for the start, each chunk of rows and the end of one export."""

    def begin(self) -> bytes: ...

    def encode(self, rows: Sequence[tuple[Any, ...]]) -> bytes: ...

    def end(self) -> bytes: ...


def _iso_rows(rows: Iterable[tuple[Any, ...]], time_cols: Sequence[int]) -> list[tuple[Any, ...]]:
    """Rows with their time columns as ISO text. A time shared by many rows (a bucket) is
    formatted once: rows come in time order and share the time object, so the last one is
    remembered by identity (a cheap test; hashing an aware datetime is not), with a dict for
    the rest."""
    if not time_cols:
        return rows if isinstance(rows, list) else list(rows)
    cache: dict[datetime, str | None] = {}
    last: list[Any] = [None] * len(time_cols)
    text: list[str | None] = [None] * len(time_cols)

    def as_text(k: int, t: Any) -> str | None:
        if t is not last[k]:
            last[k] = t
            hit = cache.get(t) if t is not None else None
            if hit is None and t is not None:
                hit = cache[t] = iso(t)
            text[k] = hit
        return text[k]

    if time_cols == [1]:  # aggregates: (id, bucket_start, ...); the common case, inlined
        out = []
        append = out.append
        for row in rows:
            t = row[1]
            if t is not last[0]:
                as_text(0, t)
            append((row[0], text[0], *row[2:]))
        return out
    result = []
    for row in rows:
        values = list(row)
        for k, c in enumerate(time_cols):
            values[c] = as_text(k, values[c])
        result.append(tuple(values))
    return result


class CsvEncoder:
    """RFC 4180 CSV with a header row and ``\\n`` line ends; empty field = missing value."""

    def __init__(self, columns: Columns) -> None:
        self.names = [name for name, _ in columns]
        self.time_cols = [i for i, (_, kind) in enumerate(columns) if kind == "time"]

    def _write(self, rows: Iterable[Sequence[Any]]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue().encode()

    def begin(self) -> bytes:
        return self._write([self.names])

    def encode(self, rows: Sequence[tuple[Any, ...]]) -> bytes:
        return self._write(_iso_rows(rows, self.time_cols))

    def end(self) -> bytes:
        return b""


class NdjsonEncoder:
    """One JSON object per line, keyed by column name, as ``/aggregates`` writes its rows."""

    def __init__(self, columns: Columns) -> None:
        self.names = [name for name, _ in columns]
        self.time_cols = [i for i, (_, kind) in enumerate(columns) if kind == "time"]

    def begin(self) -> bytes:
        return b""

    def encode(self, rows: Sequence[tuple[Any, ...]]) -> bytes:
        names, dumps, opt = self.names, orjson.dumps, orjson.OPT_APPEND_NEWLINE
        return b"".join(
            [
                dumps(dict(zip(names, row, strict=True)), option=opt)
                for row in _iso_rows(rows, self.time_cols)
            ]
        )

    def end(self) -> bytes:
        return b""


class _Sink(io.RawIOBase):
    """A write-only file that hands out what was written since the last :meth:`take`: Parquet
    is written to it one row group at a time and drained into the stream."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._pos += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(times: Sequence[datetime | None]) -> list[int | None]:
    """Times as microseconds since the epoch, which pyarrow takes for a timestamp column far
    faster than datetimes; a time shared by consecutive rows (a bucket) is converted once."""
    out: list[int | None] = []
    append = out.append
    last: Any = object()
    value: int | None = None
    for t in times:
        if t is not last:
            last = t
            value = None if t is None else (t - _EPOCH) // _MICROSECOND
        append(value)
    return out


class ParquetEncoder:
    """A Parquet file written in row groups of about :data:`PARQUET_ROW_GROUP_ROWS` rows: each
    group leaves as soon as it is full; the footer (the row groups' index) comes last."""

    def __init__(self, columns: Columns) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        kinds = {
            "text": pa.string(),
            "time": pa.timestamp("us", tz="UTC"),
            "int": pa.int64(),
            "float": pa.float64(),
        }
        self._pa = pa
        self.schema = pa.schema([(name, kinds[kind]) for name, kind in columns])
        self._sink = _Sink()
        self._writer = pq.ParquetWriter(self._sink, self.schema, compression="zstd")
        self._pending: list[tuple[Any, ...]] = []

    def begin(self) -> bytes:
        return self._sink.take()

    def _flush(self) -> None:
        if not self._pending:
            return
        pa = self._pa
        columns = list(zip(*self._pending, strict=True))
        table = pa.Table.from_arrays(
            [
                pa.array(_micros(col) if pa.types.is_timestamp(field.type) else col, field.type)
                for col, field in zip(columns, self.schema, strict=True)
            ],
            schema=self.schema,
        )
        self._writer.write_table(table, row_group_size=len(self._pending))
        self._pending = []

    def encode(self, rows: Sequence[tuple[Any, ...]]) -> bytes:
        self._pending.extend(rows)
        if len(self._pending) >= PARQUET_ROW_GROUP_ROWS:
            self._flush()
        return self._sink.take()

    def end(self) -> bytes:
        self._flush()
        self._writer.close()
        return self._sink.take()


def encoder(fmt: Format, columns: Columns) -> Encoder:
    """The encoder of ``fmt`` for rows of ``columns``."""
    return {Format.csv: CsvEncoder, Format.ndjson: NdjsonEncoder, Format.parquet: ParquetEncoder}[
        fmt
    ](columns)
