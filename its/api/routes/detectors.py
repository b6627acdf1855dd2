"""``GET /api/v1/health/detectors`` (% good detectors) and ``GET /api/v1/stations/{id}/faults``
(one station's diagnosis history): how far the figures can be trusted, and why not."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from its.api.deps import ConnDep, NetworkDep
from its.api.params import Identifier, Timestamp, checked_time
from its.api.schemas import DetectorHealth, ErrorOut, StationFault
from its.errors import QueryError
from its.service import detector_health

router = APIRouter(tags=["detector health"])


@router.get(
    "/health/detectors",
    response_model=DetectorHealth,
    summary="% good detectors, network-wide and per corridor, and the stations that are not good",
)
def detectors(conn: ConnDep, network: NetworkDep) -> dict:
    """A station is good when it reports and is not diagnosed faulty (docs/alerts.md); the share
    is over every station of the network, so one never heard from counts against it."""
    return detector_health.detector_health(conn, network)


@router.get(
    "/stations/{station_id}/faults",
    response_model=list[StationFault],
    responses={404: {"model": ErrorOut}, 400: {"model": ErrorOut}},
    summary="One station's detector-fault, offline and gateway-offline episodes, newest first",
)
def station_faults(
    conn: ConnDep,
    network: NetworkDep,
    station_id: Annotated[Identifier, Path(examples=["JKT-SDR-N-012"])],
    start: Annotated[
        Timestamp | None, Query(description="Episodes still active at or after this time")
    ] = None,
    end: Annotated[Timestamp | None, Query(description="Episodes raised before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    start = checked_time("start", start) if start else None
    end = checked_time("end", end) if end else None
    if start and end and start >= end:
        raise QueryError(f"start ({start.isoformat()}) must be before end ({end.isoformat()})")
    return detector_health.station_faults(
        conn, network, station_id, start=start, end=end, limit=limit
    )
