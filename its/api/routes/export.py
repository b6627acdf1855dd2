"""``GET /api/v1/export``: aggregates or raw readings over any window, streamed as CSV, NDJSON
or Parquet, without the point limit of ``/aggregates``.

Everything a client can get wrong is checked before the first byte (the same parameter types,
bounds and answers as ``/aggregates``: 422, 400, 404): once the body has started, the status code
is sent and an error can only cut the stream short, which the client sees as an incomplete
response (a missing final chunk), never as a well-formed but partial file.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from its.api.deps import EngineDep, NetworkDep, SettingsDep, get_conn
from its.api.params import (
    END_DOC,
    MAX_IDS,
    START_DOC,
    Bucket,
    ExportLevel,
    Identifier,
    Timestamp,
    check_known_ids,
    time_window,
)
from its.api.schemas import ErrorOut
from its.errors import QueryError
from its.formats import MEDIA_TYPES, Format
from its.network import Network
from its.service.export import ExportRequest, export_bytes

router = APIRouter(prefix="/export", tags=["export"])

DEFAULT_BUCKET = Bucket.m15

# The checks' connection goes back to the pool when the handler returns (scope="function"), not
# when the stream ends: the stream reads on a connection of its own.
CheckConn = Annotated[Connection, Depends(get_conn, scope="function")]


RETRY_AFTER_S = 30
_slots_lock = threading.Lock()


def export_slots(request: Request, settings: SettingsDep) -> threading.BoundedSemaphore:
    """The app's export slots (``ITS_EXPORT_MAX_CONCURRENT``): each export holds a database
    connection while it streams, so a crowd of them must not take the pool from everyone else."""
    state = request.app.state
    with _slots_lock:
        slots = getattr(state, "export_slots", None)
        if slots is None:
            slots = state.export_slots = threading.BoundedSemaphore(settings.export_max_concurrent)
    return slots


def _finish(pieces: Iterator[bytes], slots: threading.BoundedSemaphore) -> None:
    try:
        pieces.close()  # ends the export's read transaction and returns its connection
    except ValueError:  # pragma: no cover - "generator already executing": a thread still reads
        pass
    slots.release()


class _Stream:
    """The response body: reads ``pieces`` in the thread pool and, exactly once, closes them and
    gives the slot back: when the stream ends or fails, when the server cancels it (the client
    went away: the read in progress finishes first, anyio does not abandon the thread), or,
    were it dropped before its first piece, when it is garbage-collected."""

    def __init__(self, pieces: Iterator[bytes], slots: threading.BoundedSemaphore) -> None:
        self._pieces = pieces
        self._done = weakref.finalize(self, _finish, pieces, slots)

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> bytes:
        try:
            piece = await run_in_threadpool(next, self._pieces, None)
        except BaseException:
            self._done()
            raise
        if piece is None:
            self._done()
            raise StopAsyncIteration
        return piece


def check_request(
    network: Network,
    level: ExportLevel,
    bucket: Bucket | None,
    start: datetime,
    end: datetime,
    ids: list[str] | None,
) -> ExportRequest:
    """An :class:`ExportRequest`, or the QueryError / NotFoundError that says what is wrong
    (``start``/``end`` already checked by ``time_window`` / ``checked_time``)."""
    if level is ExportLevel.readings and bucket is not None:
        raise QueryError(
            "bucket does not apply to level=readings (raw readings are exported as stored): "
            "leave it out, or ask for level=station, segment or corridor"
        )
    # raw readings are named by their stations
    check_known_ids(network, "station" if level is ExportLevel.readings else level.value, ids)
    return ExportRequest(
        level=level.value,
        start=start,
        end=end,
        bucket_s=None if level is ExportLevel.readings else (bucket or DEFAULT_BUCKET).seconds,
        ids=tuple(sorted(set(ids))) if ids else None,
    )


def filename(req: ExportRequest, fmt: Format) -> str:
    """``its-segment-15m-20261122T000000Z-20261123T000000Z.csv``: what and when, sortable."""
    bucket = {b.seconds: b.value for b in Bucket}.get(req.bucket_s or 0)
    parts = ["its", req.level, *([bucket] if bucket else [])]
    parts += [f"{t:%Y%m%dT%H%M%SZ}" for t in (req.start, req.end)]
    return f"{'-'.join(parts)}.{fmt.value}"


@router.get(
    "",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export as a file, streamed (`Content-Disposition: attachment`)",
            "content": {media: {} for media in MEDIA_TYPES.values()},
        },
        400: {"model": ErrorOut},
        404: {"model": ErrorOut},
        429: {"model": ErrorOut, "description": "ITS_EXPORT_MAX_CONCURRENT exports running"},
    },
    summary="Stream aggregates or raw readings as CSV, NDJSON or Parquet (no point limit)",
)
def get_export(
    conn: CheckConn,
    engine: EngineDep,
    network: NetworkDep,
    slots: Annotated[threading.BoundedSemaphore, Depends(export_slots)],
    level: ExportLevel = ExportLevel.segment,
    bucket: Annotated[
        Bucket | None,
        Query(description="Aggregates' bucket (default 15m); not with level=readings"),
    ] = None,
    start: Annotated[Timestamp | None, Query(description=START_DOC)] = None,
    end: Annotated[Timestamp | None, Query(description=END_DOC)] = None,
    ids: Annotated[
        list[Identifier] | None,
        Query(
            alias="id",
            max_length=MAX_IDS,
            description=f"Restrict to these ids (repeatable, at most {MAX_IDS}); station ids "
            "for level=readings",
        ),
    ] = None,
    format: Format = Format.csv,
) -> StreamingResponse:
    """The rows of ``/aggregates`` (same columns, values and order: bucket, then id) or of the
    ``readings`` table, for any window: the point limit does not apply, the answer is streamed
    a time slice at a time. On PostgreSQL the whole export reads one snapshot."""
    start, end = time_window(conn, start, end)
    req = check_request(network, level, bucket, start, end, ids)
    if not slots.acquire(blocking=False):
        raise HTTPException(
            429,
            detail="too many exports running at once (ITS_EXPORT_MAX_CONCURRENT): retry in a "
            "moment",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return StreamingResponse(
        _Stream(export_bytes(engine, network, req, format), slots),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename(req, format)}"'},
    )
