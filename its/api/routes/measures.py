"""``GET /api/v1/measures`` (PeMS performance measures per segment or corridor direction and
bucket) and ``GET /api/v1/reliability`` (travel-time reliability per corridor direction and local
day). Two routes rather than one with a ``level=day`` because their rows differ in kind: a
reliability row summarises a day's distribution of 5-minute travel times, a measures row is one
bucket. Parameters, bounds, point limits and errors are those of ``/aggregates``
(its/api/params.py); the formulas are in its/service/measures.py."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BeforeValidator

from its.api.deps import ConnDep, NetworkDep
from its.api.params import (
    END_DOC,
    MAX_IDS,
    START_DOC,
    Bucket,
    Identifier,
    Timestamp,
    check_known_ids,
    check_points,
    time_window,
)
from its.api.schemas import ErrorOut, MeasuresOut, ReliabilityOut
from its.contract import iso
from its.errors import NotFoundError, QueryError
from its.network import Network
from its.service import measures

router = APIRouter(tags=["measures"])

#: threshold speed bounds (km/h): below 5 every vehicle is "delayed", above 200 nothing is a road
MIN_THRESHOLD_KPH, MAX_THRESHOLD_KPH = 5.0, 200.0
#: reliability reads every 5-minute segment figure of its days: at most this many days
MAX_RELIABILITY_DAYS = 31
#: and at most this many segment-days (2,000 segments x 3 days; 100 segments x 31 days)
MAX_SEGMENT_DAYS = 6_000

MeasureName = StrEnum("MeasureName", {m: m for m in measures.MEASURES})  # type: ignore[misc]


class MeasureLevel(StrEnum):
    segment = "segment"
    corridor = "corridor"


def _split_commas(value: Any) -> Any:
    """``measures=vkt_veh_km,tti`` and ``measures=vkt_veh_km&measures=tti`` mean the same."""
    if isinstance(value, list):
        return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
    return value


Direction = Annotated[
    Identifier | None,
    Query(max_length=16, description="Only this direction of travel (e.g. N); default both"),
]
Ids = Annotated[
    list[Identifier] | None,
    Query(
        alias="id",
        max_length=MAX_IDS,
        description=f"Restrict to these segment or corridor ids (repeatable, at most {MAX_IDS})",
    ),
]


def _check_direction(network: Network, direction: str | None) -> None:
    if direction is not None and direction not in {s.direction for s in network.segments}:
        raise NotFoundError(f"no segment has direction {direction!r}")


@router.get(
    "/measures",
    response_model=MeasuresOut,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    summary="VKT, VHT, delay, travel time and TTI per segment or corridor direction",
)
def get_measures(
    conn: ConnDep,
    network: NetworkDep,
    level: MeasureLevel = MeasureLevel.segment,
    bucket: Bucket = Bucket.m15,
    start: Annotated[Timestamp | None, Query(description=START_DOC)] = None,
    end: Annotated[Timestamp | None, Query(description=END_DOC)] = None,
    ids: Ids = None,
    direction: Direction = None,
    threshold_kph: Annotated[
        float,
        Query(
            ge=MIN_THRESHOLD_KPH,
            le=MAX_THRESHOLD_KPH,
            description="Threshold speed of `delay_veh_h`, km/h",
        ),
    ] = measures.DEFAULT_THRESHOLD_KPH,
    picked: Annotated[
        list[MeasureName] | None,  # type: ignore[valid-type]
        BeforeValidator(_split_commas),
        Query(
            alias="measures",
            max_length=len(measures.MEASURES),
            description="Columns to answer (repeatable or comma-separated); default all",
        ),
    ] = None,
) -> Response:
    """Per segment: VKT = q L h [veh-km], VHT = q L h / v [veh-h], delay = q h max(0, L/v - L/V)
    [veh-h] against free flow (`delay_ff_veh_h`) and `threshold_kph` (`delay_veh_h`), travel
    time 60 L / v [min], TTI = v_free / v; h is the bucket's hours inside the window. Per
    corridor direction: sums over its segments, travel time the sum of their L / v with
    segments without a speed at free flow (`segments_observed` says how many were measured)."""
    check_known_ids(network, level.value, ids)
    _check_direction(network, direction)
    if level is MeasureLevel.segment and direction is not None:
        raise QueryError("direction applies to level=corridor only")
    start, end = time_window(conn, start, end)
    available = (
        measures.SEGMENT_MEASURES if level is MeasureLevel.segment else measures.CORRIDOR_MEASURES
    )
    try:
        columns = measures.pick([str(p) for p in picked or []], available)
    except ValueError as exc:
        raise QueryError(f"{exc} for level={level.value}; known: {', '.join(available)}") from None
    if level is MeasureLevel.segment:
        targets = len(ids) if ids else len(network.segments)
        check_points(start, end, bucket.seconds, targets)
        rows = measures.segment_measures(
            conn, network, start, end, bucket.seconds, segment_ids=ids, threshold_kph=threshold_kph
        )
    else:
        ways = measures.corridor_directions(network, ids, direction)
        check_points(start, end, bucket.seconds, len(ways))
        rows = measures.corridor_measures(
            conn,
            network,
            start,
            end,
            bucket.seconds,
            corridor_ids=ids,
            direction=direction,
            threshold_kph=threshold_kph,
        )
    body = {
        "level": level.value,
        "bucket": bucket.value,
        "start": iso(start),
        "end": iso(end),
        "threshold_kph": threshold_kph,
        "measures": columns,
        "rows": [r.to_dict(columns) for r in rows],
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/reliability",
    response_model=ReliabilityOut,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    summary="Daily travel-time reliability per corridor direction",
)
def get_reliability(
    conn: ConnDep,
    network: NetworkDep,
    start: Annotated[Timestamp | None, Query(description=START_DOC)] = None,
    end: Annotated[Timestamp | None, Query(description=END_DOC)] = None,
    ids: Ids = None,
    direction: Direction = None,
) -> Response:
    """Per corridor direction and local day (the window widened to whole local days of the
    network's zone): mean and 95th-percentile travel time of the day's 5-minute corridor travel
    times, TTI of the mean, Buffer Index = (TT95 - TTmean) / TTmean and Planning Time Index =
    TT95 / TTfree. At most 31 days, and 6,000 segment-days, per request."""
    check_known_ids(network, MeasureLevel.corridor.value, ids)
    _check_direction(network, direction)
    start, end = time_window(conn, start, end)
    day_start, day_end = measures.local_days(network, start, end)
    days = round((day_end - day_start).total_seconds() / 86400)
    if days > MAX_RELIABILITY_DAYS:
        raise QueryError(
            f"this query covers {days} local days, more than the limit of "
            f"{MAX_RELIABILITY_DAYS}: use a shorter window"
        )
    ways = measures.corridor_directions(network, ids, direction)
    segments = sum(len(w.segments) for w in ways)
    if days * segments > MAX_SEGMENT_DAYS:
        raise QueryError(
            f"this query reads {days} days x {segments} segments of 5-minute travel times, more "
            f"than the limit of {MAX_SEGMENT_DAYS} segment-days: use a shorter window or fewer "
            "corridors (id=, direction=)"
        )
    rows = measures.reliability(
        conn, network, day_start, day_end, corridor_ids=ids, direction=direction
    )
    body = {
        "start": iso(day_start),
        "end": iso(day_end),
        "timezone": network.timezone,
        "rows": [r.to_dict() for r in rows],
    }
    return Response(orjson.dumps(body), media_type="application/json")
