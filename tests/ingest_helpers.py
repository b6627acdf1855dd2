"""Helpers shared by the ingest tests: observations as a sensor would send them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)


def obs(station: str = "JKT-SDR-N-001", i: int = 0, n_lanes: int = 4, **changes: Any) -> dict:
    body = {
        "v": 1,
        "station_id": station,
        "interval_start": (T0 + timedelta(seconds=30 * i)).isoformat().replace("+00:00", "Z"),
        "period_s": 30,
        "lanes": [
            {
                "lane": lane,
                "count": 5 + lane + i % 3,
                "occupancy": 0.05 * lane,
                "speed_kph": None if lane == 2 else 40.0 + lane,
            }
            for lane in range(1, n_lanes + 1)
        ],
        "status": "ok",
    }
    body.update(changes)
    return body


def dumps(body: Any) -> bytes:
    return orjson.dumps(body)
