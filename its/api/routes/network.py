"""``GET /api/v1/network``: the segments as GeoJSON with their live state."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Response

from its.api.deps import ConnDep, NetworkDep, SettingsDep
from its.api.schemas import NetworkState
from its.service import live

router = APIRouter(prefix="/network", tags=["network"])


@router.get("", response_model=NetworkState, summary="Live state of every segment (GeoJSON)")
def get_network(conn: ConnDep, network: NetworkDep, settings: SettingsDep) -> Response:
    """Each segment's speed, flow, occupancy, congestion band and TTI in the newest complete
    5-minute bucket of data time (for a data clock of 08:07:30, 08:00-08:05). ``stale`` marks a segment whose newest data is older than ``ITS_STALE_AFTER_S``;
    a segment without data has band ``no-data``, never ``free``."""
    state = live.network_state(conn, network, stale_after_s=settings.stale_after_s)
    # serialised here (the model documents it): re-validating 2,000 features costs more than
    # the query
    return Response(orjson.dumps(state), media_type="application/json")
