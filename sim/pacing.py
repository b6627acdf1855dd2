"""Pacing pieces shared by the live publisher and the backfill: the simulated clock, the bounded
window of unacknowledged QoS 1 publishes, and the periodic log line.

Why a window: paho keeps every unacknowledged QoS 1 message in memory and loses messages beyond
65,535 of them; a publisher that outruns the broker must wait for acknowledgements instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt

from sim.model import align

log = logging.getLogger("its.sim")
DEFAULT_HISTORY = timedelta(hours=6)


def default_start(
    speed: float,
    period_s: int,
    *,
    now: datetime | None = None,
    history: timedelta = DEFAULT_HISTORY,
) -> datetime:
    """Where a run starts when no start is given: now at real time; ``history`` ago when faster,
    so the run fast-forwards through recent history and then continues live."""
    now = now or datetime.now(UTC)
    return align(now - history if speed > 1 else now, period_s)


class SimClock:
    """Simulated time = start + speed x elapsed wall time, clamped to the wall clock: the
    simulator never publishes the future (ingest rejects readings stamped > 300 s ahead)."""

    def __init__(
        self,
        start: datetime,
        speed: float,
        *,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.start = start
        self.speed = speed
        self._wall = wall
        self._mono = monotonic
        self._t0 = monotonic()
        self.caught_up = False

    def now(self) -> datetime:
        unclamped = self.start + timedelta(seconds=(self._mono() - self._t0) * self.speed)
        wall = self._wall()
        if unclamped >= wall:
            self.caught_up = True
            return wall
        return unclamped

    def seconds_until(self, when: datetime) -> float:
        """Wall seconds until the simulated clock reaches ``when``."""
        ahead = (when - self.now()).total_seconds()
        return max(0.0, ahead if self.caught_up else ahead / self.speed)


class InflightWindow:
    """At most ``size`` unacknowledged QoS 1 publishes; adding one more waits for the oldest."""

    def __init__(self, size: int, stop: threading.Event | None = None) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        self.size = size
        self.stop = stop or threading.Event()
        self._pending: deque[tuple[object, mqtt.MQTTMessageInfo]] = deque()
        self.waited_out = 0  # messages given up on (left to paho's own resend)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, info: mqtt.MQTTMessageInfo, owner: object = None) -> None:
        """Track ``info`` (published by ``owner``, e.g. a station's client)."""
        self._pending.append((owner, info))
        while len(self._pending) > self.size:
            self._await(self._pending.popleft()[1], timeout=60.0)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait for every pending acknowledgement; False if some did not come in time."""
        deadline = time.monotonic() + timeout
        while self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not self._await(self._pending[0][1], timeout=left):
                return False
            self._pending.popleft()
        return True

    def settle(self, owner: object, timeout: float = 10.0) -> bool:
        """Wait for ``owner``'s acknowledgements, then stop tracking them (before its client is
        closed: a message of a closed client is never acknowledged)."""
        deadline = time.monotonic() + timeout
        ok = all(
            self._await(info, max(deadline - time.monotonic(), 0.0))
            for o, info in list(self._pending)
            if o is owner
        )
        self._pending = deque(p for p in self._pending if p[0] is not owner)
        return ok

    def _await(self, info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not info.is_published():
            left = deadline - time.monotonic()
            if left <= 0:
                self.waited_out += 1
                log.warning(
                    "sim: no PUBACK for message %s in %.0fs; paho resends it", info.mid, timeout
                )
                return False
            try:
                info.wait_for_publish(min(left, 1.0))
            except (RuntimeError, ValueError):
                # not connected right now: paho keeps the message and resends on reconnect
                self.stop.wait(0.05)
        return True


class RateLog:
    """One log line every ``every`` seconds: simulated time, observations, rate."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._t = time.monotonic()
        self._n = 0

    def maybe(self, total: int, sim_time: datetime | None, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._t < self.every:
            return
        rate = (total - self._n) / max(now - self._t, 1e-9)
        when = sim_time.isoformat().replace("+00:00", "Z") if sim_time else "-"
        log.info(
            "sim: simulated time %s, %s observations published, %.0f obs/s",
            when,
            f"{total:,}",
            rate,
        )
        self._t, self._n = now, total
