"""``its export``: the API's export (``GET /api/v1/export``) from the command line, straight from
the database (``ITS_DATABASE_URL``), with a progress bar on stderr.

It runs the same code as the API (the checks of its/api/routes/export.py, the slices of
its/service/export.py, the encoders of its/formats.py), so a file written here is byte for byte
the file the API streams for the same request. Whoever can run it can already read the database,
so it needs no API key.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from its.formats import Format


# The API's choices (its.api.params.ExportLevel and Bucket; a test holds them equal), spelt out
# here so that `its --help` does not import FastAPI.
class Level(StrEnum):
    station = "station"
    segment = "segment"
    corridor = "corridor"
    readings = "readings"


class BucketChoice(StrEnum):
    m5 = "5m"
    m15 = "15m"
    h1 = "1h"
    d1 = "1d"


def _time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time as the API reads it (no zone = UTC), checked against its range."""
    from its.api.params import checked_time

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-11-23T00:00:00Z)", param_hint=option
        ) from None
    from its.errors import QueryError

    try:
        return checked_time(option.lstrip("-"), when)
    except QueryError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _format_of(fmt: Format | None, output: Path | None) -> Format:
    """``--format``, else the output file's extension, else CSV."""
    if fmt is not None:
        return fmt
    if output is not None:
        try:
            return Format(output.suffix.lstrip(".").lower())
        except ValueError:
            pass
    return Format.csv


def export_cmd(
    level: Annotated[
        Level, typer.Option(help="station, segment, corridor, or readings (raw rows).")
    ] = Level.segment,
    bucket: Annotated[
        BucketChoice | None,
        typer.Option(help="Aggregates' bucket (default 15m); not for readings."),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="ISO 8601, UTC when no zone is given; default end - 2 h.")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="ISO 8601, UTC when no zone is given; default newest data.")
    ] = None,
    ids: Annotated[
        list[str] | None,
        typer.Option("--id", help="Only these ids (repeatable); station ids for readings."),
    ] = None,
    fmt: Annotated[
        Format | None,
        typer.Option("--format", help="csv, ndjson or parquet (default: from --output, or csv)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default: standard output)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar (only on a terminal).")] = True,
) -> None:
    """Export aggregates or raw readings over any window as CSV, NDJSON or Parquet (no point
    limit), reading the database directly; the rows of GET /api/v1/export."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from its.api.params import Bucket, ExportLevel, time_window
    from its.api.routes.export import check_request
    from its.cli import _migrated_store, _settings
    from its.errors import NotFoundError, QueryError
    from its.service.export import export_bytes

    fmt = _format_of(fmt, output)
    start_t, end_t = _time(start, "--start"), _time(end, "--end")
    engine, network = _migrated_store(_settings())
    try:
        try:
            with engine.connect() as conn:
                lo, hi = time_window(conn, start_t, end_t)
            req = check_request(
                network,
                ExportLevel(level.value),
                Bucket(bucket.value) if bucket else None,
                lo,
                hi,
                ids,
            )
        except (QueryError, NotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        bar = Progress(
            TextColumn("exporting"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}% of the window, {task.fields[rows]:,} rows"),
            TimeRemainingColumn(),
            disable=not (progress and sys.stderr.isatty()),
        )
        task = bar.add_task("export", total=(hi - lo).total_seconds(), rows=0)
        rows = [0]

        def advance(until: datetime, n: int) -> None:
            rows[0] += n
            bar.update(task, completed=(until - lo).total_seconds(), rows=rows[0])

        with bar:
            pieces = export_bytes(engine, network, req, fmt, progress=advance)
            if output is None:
                _write(typer.get_binary_stream("stdout"), pieces)
            else:
                _write_file(output, pieces)
    finally:
        engine.dispose()
    typer.echo(
        f"exported {rows[0]} rows ({req.level}, {lo.astimezone(UTC).isoformat()} .. "
        f"{hi.astimezone(UTC).isoformat()}) as {fmt.value} to {output or 'standard output'}",
        err=True,
    )


def _write_file(path: Path, pieces: Iterable[bytes]) -> None:
    """Write to ``path.part`` and rename it when complete: an export that fails half-way
    leaves no truncated file under the name asked for."""
    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as out:
            _write(out, pieces)
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _write(out: BinaryIO, pieces: Iterable[bytes]) -> None:
    for piece in pieces:
        out.write(piece)
    out.flush()
