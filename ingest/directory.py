"""The stations ingest accepts, read from the store and refreshed now and then, so a network
loaded while ingest runs is picked up without a restart."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.engine import Engine

from its.db import schema


class StationDirectory:
    """Station id -> number of lanes, refreshed every ``refresh_s`` seconds."""

    def __init__(self, engine: Engine, refresh_s: float = 60.0) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._lanes: dict[str, int] = {}
        self._loaded_at = float("-inf")

    def lanes(self, station_id: str) -> int | None:
        """Lanes of a known station; None for a station the network does not have."""
        if time.monotonic() - self._loaded_at > self._refresh_s:
            self.refresh()
        return self._lanes.get(station_id)

    def refresh(self) -> None:
        with self._engine.connect() as conn:
            rows = conn.execute(select(schema.stations.c.station_id, schema.stations.c.lanes))
            self._lanes = {sid: int(lanes) for sid, lanes in rows}
        self._loaded_at = time.monotonic()
