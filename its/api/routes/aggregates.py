"""``GET /api/v1/aggregates``: flow, speed, occupancy and % observed per level and bucket."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response

from its.api.deps import ConnDep, NetworkDep
from its.api.params import (
    END_DOC,
    MAX_IDS,
    START_DOC,
    Bucket,
    Identifier,
    Level,
    Timestamp,
    check_known_ids,
    check_points,
    time_window,
)
from its.api.schemas import Aggregates, ErrorOut
from its.contract import iso
from its.service import traffic

router = APIRouter(prefix="/aggregates", tags=["aggregates"])


@router.get(
    "",
    response_model=Aggregates,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    summary="Traffic aggregates per station, segment or corridor",
)
def get_aggregates(
    conn: ConnDep,
    network: NetworkDep,
    level: Level = Level.segment,
    bucket: Bucket = Bucket.m15,
    start: Annotated[Timestamp | None, Query(description=START_DOC)] = None,
    end: Annotated[Timestamp | None, Query(description=END_DOC)] = None,
    ids: Annotated[
        list[Identifier] | None,
        Query(
            alias="id",
            max_length=MAX_IDS,
            description=f"Restrict to these ids (repeatable, at most {MAX_IDS})",
        ),
    ] = None,
) -> Response:
    """Speed is the flow-weighted harmonic mean (single-loop lanes estimated from occupancy);
    flow the mean station flow in veh/h, normalised for missing intervals; ``pct_observed`` the
    share of expected lane intervals that arrived. Hourly and daily buckets follow the network's
    local time (Asia/Jakarta for the sample network)."""
    check_known_ids(network, level.value, ids)
    start, end = time_window(conn, start, end)
    targets = len(ids) if ids else len(network.station_groups[level.value])
    check_points(start, end, bucket.seconds, targets)
    rows = traffic.aggregate_rows(
        conn, network, level.value, start, end, bucket.seconds, target_ids=ids
    )
    # Serialised here, not validated again against the response model (which documents it): a
    # month of daily figures for 2,000 stations is 60,000 rows, and re-validating them costs
    # more than the query.
    body = {
        "level": level.value,
        "bucket": bucket.value,
        "start": iso(start),
        "end": iso(end),
        "rows": traffic.row_dicts(rows),
    }
    return Response(orjson.dumps(body), media_type="application/json")
