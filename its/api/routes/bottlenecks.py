"""``GET /api/v1/bottlenecks``: active-bottleneck episodes and their daily history for analysts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from its.alerts import bottleneck_store
from its.api.deps import ConnDep, NetworkDep
from its.api.params import END_DOC, Identifier, Timestamp, checked_time
from its.api.schemas import BottlenecksOut, ErrorOut
from its.errors import NotFoundError, QueryError
from its.service.traffic import data_clock

router = APIRouter(prefix="/bottlenecks", tags=["bottlenecks"])

DEFAULT_HISTORY = timedelta(days=7)
MAX_HISTORY = timedelta(days=366)


@router.get(
    "",
    response_model=BottlenecksOut,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    summary="Bottleneck episodes overlapping a window, and per local day and location",
)
def list_bottlenecks(
    conn: ConnDep,
    network: NetworkDep,
    start: Annotated[
        Timestamp | None,
        Query(description="ISO 8601, UTC when no zone is given; default end - 7 days"),
    ] = None,
    end: Annotated[Timestamp | None, Query(description=END_DOC)] = None,
    corridor: Annotated[Identifier | None, Query(examples=["SDR"])] = None,
    station: Annotated[
        Identifier | None, Query(description="head station", examples=["JKT-SDR-N-002"])
    ] = None,
    state: Literal["active", "all"] = "all",
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> dict:
    """Episodes (oldest first) that overlap [start, end): a still active one has ``ended_at``
    null. ``daily`` sums them per local day of their start and head station: episodes, minutes
    active, delay (veh-h) and the longest queue. Windows longer than 366 days are a 400."""
    if corridor is not None and corridor not in {c.corridor_id for c in network.corridors}:
        raise NotFoundError(f"no corridor {corridor!r}")
    if station is not None and station not in {s.station_id for s in network.stations}:
        raise NotFoundError(f"no station {station!r}")
    end_t = checked_time("end", end) if end else (data_clock(conn) or datetime.now(UTC))
    start_t = checked_time("start", start) if start else end_t - DEFAULT_HISTORY
    if start_t >= end_t:
        raise QueryError(f"start ({start_t.isoformat()}) must be before end ({end_t.isoformat()})")
    if end_t - start_t > MAX_HISTORY:
        raise QueryError("the window may span at most 366 days: use a shorter one")
    episodes = bottleneck_store.list_episodes(
        conn,
        start_t,
        end_t,
        corridor_id=corridor,
        station_id=station,
        active_only=state == "active",
        limit=limit,
    )
    return {
        "start": start_t,
        "end": end_t,
        "timezone": network.timezone,
        "episodes": [e.to_dict() for e in episodes],
        "daily": bottleneck_store.daily(episodes, network.tz),
    }
