"""The message loop: route each MQTT message, validate it, batch it, write it, then ack it.

It takes any iterable of :class:`Message` (``None`` items are ticks that let a time-bounded batch
flush while the broker is quiet), so tests feed it directly and the MQTT source is one small
adapter (:mod:`ingest.service`). Nothing a sender does stops it: what cannot be used goes to the
dead-letter store with the reason, one dead letter per message.

What may go wrong, and what happens:

- the message breaks the contract (topic, size, JSON, schema, unknown station): a dead letter
  with the reason;
- anything else raised while validating one message (a bug): a dead letter
  ``internal error: ...``, logged with its traceback; the next message is read as usual;
- the store is unreachable or failing (connection, locks, a missing table): the batch is kept,
  unacked, and retried with backoff;
- the store refuses the batch's data (an integrity or data error): the batch is written again
  one message at a time, and a message the store still refuses becomes a dead letter, so one
  such row cannot block ingest by being retried for ever (a "poison batch").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from ingest.directory import StationDirectory
from its.config import Settings
from its.contract import (
    GatewayObsTopic,
    Observation,
    RejectedItem,
    StationObsTopic,
    StationStateTopic,
    iso,
    observation_dict,
    parse_gateway_batch,
    parse_observation,
    parse_state,
    parse_topic,
    validate_observation,
)
from its.db.horizon import raw_horizon
from its.db.writes import (
    DeadLetter,
    insert_dead_letters,
    insert_readings,
    reading_rows,
    upsert_station_status,
)
from its.errors import ContractError, PayloadError, TopicError
from its.telemetry import IngestMetrics

log = logging.getLogger(__name__)


GATEWAY_REASONS_SHOWN = 10  # bad items a gateway dead letter's reason names one by one


@dataclass(frozen=True)
class Message:
    """One MQTT message; ``ack`` is called once it is safely stored (None for QoS 0 or tests).

    ``topic`` is bytes only when it was not valid UTF-8 (the MQTT source passes it raw so that it
    is dead-lettered rather than lost)."""

    topic: str | bytes
    payload: bytes
    ack: Callable[[], None] | None = None

    @property
    def topic_text(self) -> str:
        """The topic as text, whatever it was: for logs and dead letters."""
        if isinstance(self.topic, bytes):
            return self.topic.decode("utf-8", "backslashreplace")
        return self.topic


@dataclass
class IngestStats:
    messages: int = 0
    readings_inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    states: int = 0
    batches: int = 0
    write_errors: int = 0
    internal_errors: int = 0
    rejected_batches: int = 0


@dataclass
class _Batch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    states: list[tuple[str, str, datetime | None, datetime]] = field(default_factory=list)
    # kept so that a batch the store refuses can be written again one message at a time
    messages: list[Message] = field(default_factory=list)
    started: float | None = None

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.dead) + len(self.states)


#: what :meth:`Pipeline.collect` fills: reading rows, dead letters, states (and the messages)
Batch = _Batch


def is_transient(exc: BaseException) -> bool:
    """Whether a write failed because of the store (retry the batch as it is) rather than
    because of the data in it (find the message at fault).

    Integrity and data errors (SQLSTATE classes 23 and 22), and errors raised while converting a
    value before it reached the database, are the data's. Everything else from the database
    (connection lost, server shutting down, locks, a missing table or permission) is the
    store's: writing the same rows later may well succeed, and dead-lettering them would not
    help."""
    if isinstance(exc, IntegrityError | DataError):
        return False
    if isinstance(exc, DBAPIError):
        return True
    return isinstance(exc, SQLAlchemyError) and not isinstance(exc, StatementError)


def _describe(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"[:300]


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
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.directory = directory or StationDirectory(engine, retry_delays=retry_delays)
        self.clock = clock
        self.stats = IngestStats()
        self._retry_delays = retry_delays
        self._batch = _Batch()
        self.metrics = metrics
        #: keep readings older than the raw retention (an import of history: `its import
        #: --accept-old`); ingest refuses them
        self.accept_old = False
        self._horizon: tuple[datetime | None, datetime | None] = (None, None)
        self._write_s = 0.0  # how long the last successful write took (for metrics)

    # ------------------------------------------------------------------ routing

    def handle(self, msg: Message) -> None:
        """Validate one message into the current batch. Nothing in the message can make this
        raise; a database error while reading the station list propagates only before the
        list was ever loaded (:meth:`run` loads it first)."""
        self.stats.messages += 1
        b = self._batch
        if b.started is None:
            b.started = time.monotonic()
        b.messages.append(msg)
        self._route(msg, b, self.clock())

    def _route(self, msg: Message, b: _Batch, now: datetime) -> None:
        self._guard(msg, b, now, self._validate)

    def _guard(
        self,
        msg: Message,
        b: _Batch,
        now: datetime,
        validate: Callable[[Message, _Batch, datetime], None],
    ) -> None:
        try:
            validate(msg, b, now)
        except ContractError as exc:
            b.dead.append(self._dead_letter(msg, str(exc), now))
        except SQLAlchemyError:
            raise  # the store's trouble, not the message's: never a dead letter
        except Exception as exc:  # noqa: BLE001 - one message must not stop ingest
            self.stats.internal_errors += 1
            log.exception("ingest: internal error on a message on %r", msg.topic_text[:200])
            b.dead.append(self._dead_letter(msg, f"internal error: {_describe(exc)}", now))

    def _validate(self, msg: Message, b: _Batch, now: datetime) -> None:
        if isinstance(msg.topic, bytes):
            raise TopicError("topic is not valid UTF-8")
        self._check_size(msg)
        topic = parse_topic(self.settings.topic_prefix, msg.topic)
        match topic:
            case StationObsTopic():
                obs = parse_observation(
                    msg.payload, now=now, max_future_s=self.settings.ingest_max_future_s
                )
                self._accept(obs, topic.station_id, now, b)
            case GatewayObsTopic():
                self._gateway(msg, now, b)
            case StationStateTopic():
                state = parse_state(msg.payload)
                if self.directory.lanes(topic.station_id) is None:
                    raise PayloadError(f"unknown station {topic.station_id!r}")
                b.states.append((topic.station_id, state.state, state.at, now))
            case _:
                raise TopicError(f"topic {msg.topic[:200]!r} is published by the platform")

    def _check_size(self, msg: Message) -> None:
        limit = self.settings.mqtt_max_payload_bytes
        if len(msg.payload) > limit:
            raise PayloadError(
                f"payload of {len(msg.payload):,} bytes exceeds the limit of {limit:,} bytes "
                "(ITS_MQTT_MAX_PAYLOAD_BYTES)"
            )

    def _accept(
        self, obs: Observation, topic_station: str | None, now: datetime, b: _Batch
    ) -> None:
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
        if not self.accept_old:
            self._check_retention(obs, now)
        b.rows.extend(reading_rows(obs, now))

    def _check_retention(self, obs: Observation, now: datetime) -> None:
        """Refuse a reading older than the raw retention: its bucket's raw rows are deleted
        once rolled up, so it could never count (docs/storage.md, Retention)."""
        days = self.settings.retention_raw_days
        if self._horizon[0] != now:  # the lines of an import batch share one ``now``
            self._horizon = (now, raw_horizon(now, days))
        limit = self._horizon[1]
        if limit is not None and obs.interval_start < limit:
            raise PayloadError(
                f"interval_start {iso(obs.interval_start)} is older than the raw retention "
                f"(ITS_RETENTION_RAW_DAYS={days}: before {iso(limit)}); raw readings that old "
                "are deleted once rolled up and their roll-ups are final"
            )

    def _gateway(self, msg: Message, now: datetime, b: _Batch) -> None:
        """Good elements become readings; the bad ones, however many, make one dead letter
        holding just them (its reason lists them), so memory and rows grow with the array,
        not with its square."""
        items = parse_gateway_batch(
            msg.payload, now=now, max_future_s=self.settings.ingest_max_future_s
        )
        bad: list[RejectedItem] = []
        for i, item in enumerate(items):
            if isinstance(item, RejectedItem):
                bad.append(item)
                continue
            try:
                self._accept(item, None, now, b)
            except PayloadError as exc:
                bad.append(RejectedItem(i, str(exc), observation_dict(item)))
        if bad:
            b.dead.append(self._gateway_dead_letter(msg, bad, len(items), now))

    def _gateway_dead_letter(
        self, msg: Message, bad: list[RejectedItem], total: int, now: datetime
    ) -> DeadLetter:
        shown = "; ".join(str(r) for r in bad[:GATEWAY_REASONS_SHOWN])
        more = len(bad) - GATEWAY_REASONS_SHOWN
        reason = f"{len(bad)} of {total} gateway items rejected (payload: those items): {shown}"
        if more > 0:
            reason += f"; and {more} more"
        try:
            payload = orjson.dumps([r.item for r in bad])
        except (TypeError, orjson.JSONEncodeError):  # cannot happen for parsed JSON; keep all
            payload = msg.payload
        return DeadLetter.bounded(
            msg.topic_text, payload, reason, now, self.settings.dead_letter_max_bytes
        )

    def _dead_letter(self, msg: Message, reason: str, now: datetime) -> DeadLetter:
        return DeadLetter.bounded(
            msg.topic_text, msg.payload, reason, now, self.settings.dead_letter_max_bytes
        )

    # ------------------------------------------------------------------ without a broker

    def collect(self, msg: Message, b: Batch, now: datetime) -> None:
        """Validate one message into ``b`` (rows, dead letters, states) without writing it:
        the bulk import (:mod:`its.importer`) validates exactly as ingest does through this."""
        self._route(msg, b, now)

    def collect_payload(self, msg: Message, b: Batch, now: datetime) -> None:
        """Validate a payload that came without a topic (a line of an import file): an object
        is one observation, an array a gateway's observations; reasons are ingest's."""
        self._guard(msg, b, now, self._validate_bare)

    def collect_observation(self, data: Any, msg: Message, b: Batch, now: datetime) -> None:
        """Validate an observation already parsed (a CSV row made into one); a failure is a
        dead letter of ``msg``, with ingest's reasons."""

        def validate(_msg: Message, batch: Batch, at: datetime) -> None:
            max_future_s = self.settings.ingest_max_future_s
            obs = validate_observation(data, now=at, max_future_s=max_future_s)
            self._accept(obs, None, at, batch)

        self._guard(msg, b, now, validate)

    def _validate_bare(self, msg: Message, b: Batch, now: datetime) -> None:
        self._check_size(msg)
        if msg.payload.lstrip()[:1] == b"[":
            self._gateway(msg, now, b)
            return
        obs = parse_observation(
            msg.payload, now=now, max_future_s=self.settings.ingest_max_future_s
        )
        self._accept(obs, None, now, b)

    # ------------------------------------------------------------------ batching

    @property
    def pending(self) -> bool:
        """Whether messages are held that are not yet written and acked."""
        return self._batch.started is not None

    def due(self) -> bool:
        b = self._batch
        if b.started is None:
            return False
        if len(b.rows) >= self.settings.ingest_batch_size:
            return True
        return time.monotonic() - b.started >= self.settings.ingest_batch_seconds

    def flush(self, stop: Callable[[], bool] = lambda: False) -> bool:
        """Write the batch in one transaction, then ack its messages. On a failure of the store
        the batch is kept (unacked) and retried with backoff; returns False if ``stop`` ended
        that. When the store refuses the batch's data, it is written message by message."""
        b = self._batch
        if b.started is None:
            return True
        try:
            inserted = self._write_retrying(b, stop)
        except Exception as exc:  # noqa: BLE001 - not transient: some message's data is at fault
            return self._isolate(b, exc, stop)
        if inserted is None:
            return False
        self._done(b, inserted)
        self._batch = _Batch()
        return True

    def _write_retrying(self, b: _Batch, stop: Callable[[], bool]) -> int | None:
        """Rows inserted; None when ``stop`` ended the retries. Non-transient errors raise."""
        attempt = 0
        while True:
            try:
                return self._write(b)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._write_error()
                delay = self._retry_delays[min(attempt, len(self._retry_delays) - 1)]
                log.error(
                    "ingest: write failed (%s); retrying in %.1fs", exc.__class__.__name__, delay
                )
                log.debug("write error", exc_info=True)
                attempt += 1
                if stop() and attempt > 1:
                    return None
                time.sleep(delay)

    def _isolate(self, b: _Batch, exc: BaseException, stop: Callable[[], bool]) -> bool:
        """Write a refused batch one message at a time; each message the store still refuses
        becomes a dead letter. Each message is acked as soon as its own write commits."""
        self._write_error()
        self.stats.rejected_batches += 1
        log.error(
            "ingest: the store refused a batch (%s); writing its %d messages one by one",
            _describe(exc),
            len(b.messages),
        )
        self.directory.invalidate()  # a station removed since the last reload, for instance
        now = self.clock()
        while b.messages:
            msg = b.messages[0]
            inserted, written = self._write_alone(msg, now, stop)
            if inserted is None:
                return False
            self._done(written, inserted)
            b.messages.pop(0)
        self._batch = _Batch()
        return True

    def _write_alone(
        self, msg: Message, now: datetime, stop: Callable[[], bool]
    ) -> tuple[int | None, _Batch]:
        """Write one message of a refused batch: as validated; if the store refuses that, as a
        dead letter naming the refusal; if even that is refused, as a dead letter without its
        payload. Should the store refuse all three, it is at fault after all: wait and retry."""
        attempt = 0
        while True:
            single = _Batch(messages=[msg])
            self._route(msg, single, now)
            first: BaseException | None = None
            for fallback in range(3):
                try:
                    return self._write_retrying(single, stop), single
                except Exception as exc:  # noqa: BLE001 - this message's data is at fault
                    first = first or exc
                    log.error("ingest: the store refused a message: %s", _describe(exc))
                reason = f"the store refused this message: {_describe(first)}"
                payload_kept = msg if fallback == 0 else Message(msg.topic, b"")
                single = _Batch(messages=[msg], dead=[self._dead_letter(payload_kept, reason, now)])
            delay = self._retry_delays[min(attempt, len(self._retry_delays) - 1)]
            log.critical(
                "ingest: the store refuses even a bare dead letter; retrying in %.1fs", delay
            )
            attempt += 1
            if stop():
                return None, single
            time.sleep(delay)

    def _write_error(self) -> None:
        self.stats.write_errors += 1
        if self.metrics is not None:
            self.metrics.write_errors.inc()

    def _done(self, b: _Batch, inserted: int) -> None:
        for msg in b.messages:
            if msg.ack is not None:
                msg.ack()
        self.stats.readings_inserted += inserted
        self.stats.duplicates += len(b.rows) - inserted
        self.stats.dead_letters += len(b.dead)
        self.stats.states += len(b.states)
        self.stats.batches += 1
        if self.metrics is not None:
            self.metrics.batch(
                messages=len(b.messages),
                rows=len(b.rows),
                inserted=inserted,
                dead_reasons=[d.reason for d in b.dead],
                states=len(b.states),
                seconds=self._write_s,
                newest=max((r["interval_start"] for r in b.rows), default=None),
            )

    def _write(self, b: _Batch) -> int:
        started = time.perf_counter()
        with self.engine.begin() as conn:
            inserted = insert_readings(conn, b.rows)
            insert_dead_letters(conn, b.dead)
            for station_id, state, at, received in b.states:
                upsert_station_status(conn, station_id, state, at, received)
        self._write_s = time.perf_counter() - started
        return inserted

    def run(
        self, messages: Iterable[Message | None], stop: Callable[[], bool] = lambda: False
    ) -> IngestStats:
        """Consume ``messages`` until they end or ``stop()``; the last batch is always flushed.

        The station list is loaded first (waiting, with retries, for the store). ``None`` from
        the source means "nothing arrived for a tick": with ``ingest_idle_flush_s`` set, the
        batch is then written at once rather than when its time is up. Acks go out only after
        the commit, so a broker that limits unacknowledged messages per subscriber (Mosquitto's
        ``max_inflight_messages``, ``max_queued_messages``) stops sending until they do;
        waiting out the batch time then would idle both sides."""
        if not self.directory.ensure_loaded(stop):
            return self.stats
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
