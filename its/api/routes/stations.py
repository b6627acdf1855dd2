"""``GET /api/v1/stations`` and one station's time series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from its.api.deps import ConnDep, NetworkDep
from its.api.params import (
    END_DOC,
    START_DOC,
    Bucket,
    Identifier,
    Timestamp,
    check_points,
    time_window,
)
from its.api.schemas import ErrorOut, LaneSeries, StationOut, StationSeries
from its.errors import NotFoundError, QueryError
from its.service import lanes, live, traffic

router = APIRouter(prefix="/stations", tags=["stations"])


@router.get("", response_model=list[StationOut], summary="Detector stations and their health")
def list_stations(conn: ConnDep, network: NetworkDep) -> list[dict]:
    health = {h["station_id"]: h for h in live.station_health(conn, network)}
    corridor = {s.segment_id: s.corridor_id for s in network.segments}
    return [
        {
            "station_id": st.station_id,
            "segment_id": st.segment_id,
            "corridor_id": corridor[st.segment_id],
            "lanes": st.lanes,
            "lon": st.lon,
            "lat": st.lat,
            "detector": st.detector,
            "health": health[st.station_id]["health"],
            "last_seen": health[st.station_id]["last_seen"],
        }
        for st in network.stations
    ]


@router.get(
    "/{station_id}/series",
    response_model=StationSeries,
    responses={404: {"model": ErrorOut}, 400: {"model": ErrorOut}},
    summary="One station's flow, speed and occupancy per bucket",
)
def station_series(
    conn: ConnDep,
    network: NetworkDep,
    station_id: Annotated[Identifier, Path(examples=["JKT-SDR-N-012"])],
    start: Annotated[Timestamp | None, Query(description=START_DOC)] = None,
    end: Annotated[Timestamp | None, Query(description=END_DOC)] = None,
    bucket: Bucket = Bucket.m5,
) -> dict:
    if station_id not in {s.station_id for s in network.stations}:
        raise NotFoundError(f"no station {station_id!r}")
    start, end = time_window(conn, start, end)
    check_points(start, end, bucket.seconds, 1)
    rows = traffic.aggregate(
        conn, network, "station", start, end, bucket.seconds, target_ids=[station_id]
    )
    points = [r.to_point() for r in rows]
    return {
        "station_id": station_id,
        "bucket": bucket.value,
        "start": start,
        "end": end,
        "points": points,
    }


@router.get(
    "/{station_id}/lanes",
    response_model=LaneSeries,
    responses={404: {"model": ErrorOut}, 400: {"model": ErrorOut}},
    summary="One station's flow, speed and occupancy per lane and bucket (raw readings)",
)
def station_lanes(
    conn: ConnDep,
    network: NetworkDep,
    station_id: Annotated[Identifier, Path(examples=["JKT-SDR-N-012"])],
    start: Annotated[Timestamp | None, Query(description=START_DOC)] = None,
    end: Annotated[Timestamp | None, Query(description=END_DOC)] = None,
    bucket: Bucket = Bucket.m5,
) -> dict:
    """Read from the raw readings (roll-ups keep station sums only): at most 31 days, and
    nothing beyond the raw retention. Hourly and daily buckets follow the network's local time."""
    station = next((s for s in network.stations if s.station_id == station_id), None)
    if station is None:
        raise NotFoundError(f"no station {station_id!r}")
    start, end = time_window(conn, start, end)
    if end - start > lanes.MAX_LANE_WINDOW:
        raise QueryError(
            f"a lane series reads raw readings: at most {lanes.MAX_LANE_WINDOW.days} days per "
            f"request (asked {end - start})"
        )
    check_points(start, end, bucket.seconds, station.lanes)
    tz = traffic.bucket_tz(network, bucket.seconds)
    points = lanes.lane_series(conn, station, start, end, bucket.seconds, tz)
    return {
        "station_id": station_id,
        "lanes": station.lanes,
        "bucket": bucket.value,
        "start": start,
        "end": end,
        "points": [p.to_dict() for p in points],
    }
