"""The stations ingest accepts, read from the store and refreshed now and then, so a network
loaded while ingest runs is picked up without a restart.

A database error while reloading never stops ingest: the last good list keeps serving and the
reload is retried with backoff, as batch writes are. Only the very first load has nothing to fall
back on, so :meth:`StationDirectory.ensure_loaded` waits for it (retrying) before ingest reads a
message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from its.db import schema

log = logging.getLogger(__name__)


class StationDirectory:
    """Station id -> number of lanes, refreshed every ``refresh_s`` seconds."""

    def __init__(
        self,
        engine: Engine,
        refresh_s: float = 60.0,
        retry_delays: tuple[float, ...] = (0.5, 1, 2, 5, 10),
    ) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._retry_delays = retry_delays
        self._lanes: dict[str, int] = {}
        self._loaded = False
        self._next_load = float("-inf")
        self._failures = 0

    def lanes(self, station_id: str) -> int | None:
        """Lanes of a known station; None for a station the network does not have."""
        if time.monotonic() >= self._next_load:
            self._reload()
        return self._lanes.get(station_id)

    def invalidate(self) -> None:
        """Reload at the next lookup (the store refused rows: a station may have gone)."""
        self._next_load = float("-inf")

    def ensure_loaded(
        self, stop: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep
    ) -> bool:
        """Load the list, retrying with backoff while the store is unreachable; False if
        ``stop()`` ended the wait first."""
        while not self._loaded:
            try:
                self.refresh()
            except SQLAlchemyError as exc:
                delay = self._failed(exc)
                if stop():
                    return False
                sleep(delay)
        return True

    def refresh(self) -> None:
        """Read the station list now (raises on a database error)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(schema.stations.c.station_id, schema.stations.c.lanes))
            self._lanes = {sid: int(lanes) for sid, lanes in rows}
        self._loaded = True
        self._failures = 0
        self._next_load = time.monotonic() + self._refresh_s

    def _reload(self) -> None:
        if not self._loaded:
            self.refresh()  # nothing to fall back on: the caller sees the error
            return
        try:
            self.refresh()
        except SQLAlchemyError as exc:
            self._next_load = time.monotonic() + self._failed(exc)

    def _failed(self, exc: SQLAlchemyError) -> float:
        delay = self._retry_delays[min(self._failures, len(self._retry_delays) - 1)]
        self._failures += 1
        log.error(
            "ingest: reading the station list failed (%s); %s, retrying in %.1fs",
            exc.__class__.__name__,
            f"keeping the last {len(self._lanes)} stations" if self._loaded else "waiting",
            delay,
        )
        log.debug("station list error", exc_info=True)
        return delay
