"""Helpers shared by the ingest tests: observations as a sensor would send them."""

from __future__ import annotations

import subprocess
import sys
import threading
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


class IngestProcess:
    """``its ingest`` in a child process with environment ``env``, its log lines collected in
    ``lines`` as they come (the tests wait on them and print them when an assertion fails)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "its.cli", "ingest"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(self.proc.stdout), daemon=True
        )
        self._reader.start()

    def close(self) -> None:
        """Kill it if it still runs, then collect the rest of its log."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._reader.join(5)
        self.proc.stdout.close()
