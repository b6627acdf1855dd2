"""The message loop: route each MQTT message, validate it, batch it, write it, then ack it.

It takes any iterable of :class:`Message` (``None`` items are ticks that let a time-bounded batch
flush while the broker is quiet), so tests feed it directly and the MQTT source is one small
adapter (:mod:`ingest.service`). Nothing a sender does stops it: what cannot be used goes to the
dead-letter store with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ingest.directory import StationDirectory
from its.config import Settings
from its.contract import (
    GatewayObsTopic,
    Observation,
    StationObsTopic,
    StationStateTopic,
    parse_gateway_batch,
    parse_observation,
    parse_state,
    parse_topic,
)
from its.db.writes import (
    DeadLetter,
    insert_dead_letters,
    insert_readings,
    reading_rows,
    upsert_station_status,
)
from its.errors import ContractError, PayloadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One MQTT message; ``ack`` is called once it is safely stored (None for QoS 0 or tests)."""

    topic: str
    payload: bytes
    ack: Callable[[], None] | None = None


@dataclass
class IngestStats:
    messages: int = 0
    readings_inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    states: int = 0
    batches: int = 0
    write_errors: int = 0


@dataclass
class _Batch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    states: list[tuple[str, str, datetime | None, datetime]] = field(default_factory=list)
    acks: list[Callable[[], None]] = field(default_factory=list)
    started: float | None = None

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.dead) + len(self.states)


class Pipeline:
    """Validates and batches messages; a batch is one transaction, acked after its commit."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        directory: StationDirectory | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_delays: tuple[float, ...] = (0.5, 1, 2, 5, 10),
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.directory = directory or StationDirectory(engine)
        self.clock = clock
        self.stats = IngestStats()
        self._retry_delays = retry_delays
        self._batch = _Batch()

    # ------------------------------------------------------------------ routing

    def handle(self, msg: Message) -> None:
        """Validate one message into the current batch."""
        self.stats.messages += 1
        now = self.clock()
        if self._batch.started is None:
            self._batch.started = time.monotonic()
        if msg.ack is not None:
            self._batch.acks.append(msg.ack)
        try:
            topic = parse_topic(self.settings.topic_prefix, msg.topic)
            match topic:
                case StationObsTopic():
                    obs = parse_observation(
                        msg.payload, now=now, max_future_s=self.settings.ingest_max_future_s
                    )
                    self._accept(obs, topic.station_id, now)
                case GatewayObsTopic():
                    self._gateway(msg, now)
                case StationStateTopic():
                    state = parse_state(msg.payload)
                    self._batch.states.append((topic.station_id, state.state, state.at, now))
                case _:
                    raise ContractError(f"topic {msg.topic!r} is published by the platform")
        except ContractError as exc:
            self._dead(msg, str(exc), now)

    def _accept(self, obs: Observation, topic_station: str | None, now: datetime) -> None:
        if topic_station is not None and obs.station_id != topic_station:
            raise PayloadError(
                f"station_id {obs.station_id!r} does not match the topic's {topic_station!r}"
            )
        lanes = self.directory.lanes(obs.station_id)
        if lanes is None:
            raise PayloadError(f"unknown station {obs.station_id!r}")
        too_high = [r.lane for r in obs.lanes if r.lane > lanes]
        if too_high:
            raise PayloadError(
                f"station {obs.station_id} has {lanes} lanes; got lane(s) {too_high}"
            )
        self._batch.rows.extend(reading_rows(obs, now))

    def _gateway(self, msg: Message, now: datetime) -> None:
        items = parse_gateway_batch(
            msg.payload, now=now, max_future_s=self.settings.ingest_max_future_s
        )
        for i, item in enumerate(items):
            try:
                if isinstance(item, PayloadError):
                    raise item
                self._accept(item, None, now)
            except PayloadError as exc:
                reason = str(exc) if str(exc).startswith("[") else f"[{i}] {exc}"
                self._dead(msg, reason, now)

    def _dead(self, msg: Message, reason: str, now: datetime) -> None:
        self._batch.dead.append(DeadLetter(msg.topic, msg.payload, reason, now))

    # ------------------------------------------------------------------ batching

    def due(self) -> bool:
        b = self._batch
        if b.started is None:
            return False
        if len(b.rows) >= self.settings.ingest_batch_size:
            return True
        return time.monotonic() - b.started >= self.settings.ingest_batch_seconds

    def flush(self, stop: Callable[[], bool] = lambda: False) -> bool:
        """Write the batch in one transaction, then ack its messages. On a database error the
        batch is kept (unacked) and retried with backoff; returns False if ``stop`` ended that."""
        b = self._batch
        if b.started is None:
            return True
        attempt = 0
        while True:
            try:
                inserted = self._write(b)
                break
            except SQLAlchemyError as exc:
                self.stats.write_errors += 1
                delay = self._retry_delays[min(attempt, len(self._retry_delays) - 1)]
                log.error(
                    "ingest: write failed (%s); retrying in %.1fs", exc.__class__.__name__, delay
                )
                log.debug("write error", exc_info=True)
                attempt += 1
                if stop() and attempt > 1:
                    return False
                time.sleep(delay)
        for ack in b.acks:
            ack()
        self.stats.readings_inserted += inserted
        self.stats.duplicates += len(b.rows) - inserted
        self.stats.dead_letters += len(b.dead)
        self.stats.states += len(b.states)
        self.stats.batches += 1
        self._batch = _Batch()
        return True

    def _write(self, b: _Batch) -> int:
        with self.engine.begin() as conn:
            inserted = insert_readings(conn, b.rows)
            insert_dead_letters(conn, b.dead)
            for station_id, state, at, received in b.states:
                upsert_station_status(conn, station_id, state, at, received)
        return inserted

    def run(
        self, messages: Iterable[Message | None], stop: Callable[[], bool] = lambda: False
    ) -> IngestStats:
        """Consume ``messages`` until they end or ``stop()``; the last batch is always flushed.

        ``None`` from the source means "nothing arrived for a tick": with
        ``ingest_idle_flush_s`` set, the batch is then written at once rather than when its time
        is up. Acks go out only after the commit, so a broker that
        limits unacknowledged messages per subscriber (Mosquitto's ``max_inflight_messages``,
        ``max_queued_messages``) stops sending until they do; waiting out the batch time then
        would idle both sides."""
        for msg in messages:
            if msg is not None:
                self.handle(msg)
            idle = msg is None and self.settings.ingest_idle_flush_s > 0
            if self.due() or (idle and self._batch.started is not None):
                self.flush(stop)
            if stop():
                break
        self.flush(stop)
        return self.stats
