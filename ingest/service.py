"""``its ingest``: the MQTT source feeding :class:`ingest.pipeline.Pipeline`.

paho's network thread only puts messages on a queue; this thread validates, batches, writes and
acks. Acks are manual and sent after the commit, on a persistent session (clean_session False,
a stable client id), so a crash before a commit means redelivery, never loss; the reading key
makes that redelivery harmless.

A worker's identity is its client id, ``its-ingest-<worker id>``: the broker keeps the worker's
session, and on a shared subscription its share of the messages, under that id while the worker
is away. :func:`drain_worker` retires a worker for good without stranding that share.
"""

from __future__ import annotations

import functools
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
from sqlalchemy.engine import Engine

from ingest.mqtt import connect, make_client
from ingest.pipeline import IngestStats, Message, Pipeline
from its.config import MqttEndpoint, Settings
from its.contract import subscriptions
from its.db.engine import make_engine
from its.errors import ConfigError, ITSError
from its.telemetry import IngestMetrics

log = logging.getLogger("its.ingest")
REPORT_EVERY_S = 10.0


def default_client_id(settings: Settings) -> str:
    """Stable per host and prefix, so a restarted worker resumes its persistent session."""
    return f"its-ingest-{socket.gethostname()}-{settings.topic_prefix.replace('/', '-')}"[:128]


def worker_client_id(settings: Settings) -> str:
    """The MQTT client id of this ingest worker.

    ``its-ingest-<ITS_INGEST_WORKER_ID>`` when a worker id is set. Without one, a single worker
    keeps the host-derived default. On a shared subscription a worker id is required: two
    workers on one host would share the default and keep taking the session from each other,
    and anything derived per process (a pid, a container's random hostname) changes on restart
    and strands the old session's queued share at the broker.
    """
    if settings.ingest_worker_id:
        return f"its-ingest-{settings.ingest_worker_id}"
    if settings.ingest_share_group:
        raise ConfigError(
            f"ITS_INGEST_SHARE_GROUP={settings.ingest_share_group} needs a worker id: give each "
            "ingest worker its own stable ITS_INGEST_WORKER_ID (or --worker-id), e.g. ingest-1, "
            "ingest-2, kept across restarts (docs/ingest.md, Worker identities)"
        )
    return default_client_id(settings)


class DrainError(ITSError):
    """A worker's session could not be drained to the end; it is left as it was (nothing lost)."""


def to_message(m: mqtt.MQTTMessage, ack: Callable[[], None] | None) -> Message:
    """paho's message as the pipeline's. A topic that is not UTF-8 makes paho's ``topic``
    raise in its network thread (and the message would never be acked): pass the raw bytes on,
    for the pipeline to dead-letter."""
    try:
        topic: str | bytes = m.topic
    except UnicodeDecodeError:
        topic = bytes(m._topic)  # paho has no public accessor for the raw topic
    return Message(topic, bytes(m.payload), ack)


class MqttSource:
    """Subscribes and yields :class:`Message` items (or ``None`` ticks while quiet)."""

    def __init__(
        self,
        settings: Settings,
        endpoint: MqttEndpoint,
        client_id: str,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.metrics = metrics
        self.queue: queue.Queue[Message] = queue.Queue(maxsize=200_000)
        self.subscribed = threading.Event()
        self.client = make_client(endpoint, client_id, clean_session=False, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_disconnect = self._on_disconnect
        self.client.max_inflight_messages_set(1000)
        self.client_id = client_id
        self.lost = threading.Event()  # the connection dropped (unexpectedly) at least once

    def _topics(self) -> list[str]:
        return subscriptions(self.settings.topic_prefix, self.settings.ingest_share_group)

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("ingest: broker refused the connection: %s", rc)
            return
        if self.metrics is not None:
            self.metrics.broker(connected=True)
        topics = self._topics()
        client.subscribe([(t, 1) for t in topics])
        log.info("ingest: connected to %s, subscribed to %s", self.endpoint.url, ", ".join(topics))

    def _on_disconnect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if self.metrics is not None:
            self.metrics.broker(connected=False, expected=not getattr(rc, "is_failure", False))
        if getattr(rc, "is_failure", False):
            self.lost.set()
            log.warning(
                "ingest: disconnected from broker (%s); paho reconnects. If this repeats, "
                "another process may be using the client id %s (a worker id must be unique)",
                rc,
                self.client_id,
            )

    def _on_message(self, client: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        ack = functools.partial(client.ack, m.mid, m.qos) if m.qos > 0 else None
        self.queue.put(to_message(m, ack))

    def start(self) -> None:
        connect(self.client, self.endpoint)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def messages(self, stop: threading.Event, tick: float = 0.02) -> Iterator[Message | None]:
        """Messages as they arrive, and ``None`` after ``tick`` seconds without one (an idle
        source: the pipeline writes and acks its batch then)."""
        while not stop.is_set():
            try:
                yield self.queue.get(timeout=tick)
            except queue.Empty:
                yield None
        while True:  # drain what already arrived so it is stored before we leave
            try:
                yield self.queue.get_nowait()
            except queue.Empty:
                return


class _Reporter:
    """A log line with counts every ~10 s when anything arrived: how `make run` users see data."""

    def __init__(self, stats: IngestStats, on_stats: Callable[[IngestStats], None] | None) -> None:
        self.stats = stats
        self.on_stats = on_stats
        self.last_t = time.monotonic()
        self.last_messages = 0
        self.last_readings = 0

    def maybe(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_t < REPORT_EVERY_S:
            return
        s = self.stats
        if s.messages != self.last_messages or force:
            rate = (s.messages - self.last_messages) / max(now - self.last_t, 1e-9)
            log.info(
                "ingest: +%d readings (%s total), %d duplicates, %d dead letters, %d states, "
                "%.0f msg/s",
                s.readings_inserted - self.last_readings,
                f"{s.readings_inserted:,}",
                s.duplicates,
                s.dead_letters,
                s.states,
                rate,
            )
        if self.on_stats is not None:
            self.on_stats(s)
        self.last_t, self.last_messages, self.last_readings = now, s.messages, s.readings_inserted


class _DrainSource(MqttSource):
    """Resumes a worker's persistent session and unsubscribes at once, so the broker routes no
    new messages to it while what it queued for the worker is delivered."""

    def __init__(self, settings: Settings, endpoint: MqttEndpoint, client_id: str) -> None:
        super().__init__(settings, endpoint, client_id)
        self.connected = threading.Event()
        self.session_present = False
        self.unsubscribed = threading.Event()
        self.client.on_subscribe = None
        self.client.on_unsubscribe = lambda *_a: self.unsubscribed.set()

    def _on_connect(
        self, client: mqtt.Client, _u: object, flags: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("ingest: broker refused the connection: %s", rc)
            return
        self.session_present = bool(getattr(flags, "session_present", False))
        client.unsubscribe(self._topics())
        self.connected.set()


def drain_worker(
    settings: Settings,
    endpoint: MqttEndpoint,
    client_id: str,
    *,
    engine: Engine | None = None,
    quiet_s: float = 2.0,
    connect_timeout_s: float = 15.0,
) -> IngestStats:
    """Retire the worker whose session is ``client_id``: store everything the broker queued for
    it, then end its session so the broker routes nothing more to it.

    Stop the worker first. This connects as that worker (clean session off, resuming what the
    broker kept), unsubscribes from ingest's filters (on a shared subscription the group's other
    members then get every new message), ingests and acks what was queued, and ends when nothing
    has arrived for ``quiet_s`` after the last ack, with the connection unbroken throughout.
    Then it disconnects and reconnects once with a clean session, which makes the broker discard
    the session. Raises :class:`DrainError` (leaving the session for a retry, nothing lost) if
    the connection broke meanwhile: another process, perhaps the worker itself, took it over.
    """
    engine = engine or make_engine(settings.resolved_database_url)
    pipeline = Pipeline(engine, settings)
    if not pipeline.directory.ensure_loaded():
        return pipeline.stats
    source = _DrainSource(settings, endpoint, client_id)
    source.start()
    try:
        if not source.connected.wait(connect_timeout_s):
            raise DrainError(f"no connection to {endpoint.url} as {client_id}")
        if not source.session_present:
            log.info("ingest: the broker has no session for %s: nothing to drain", client_id)
        tick = settings.ingest_idle_flush_s or 0.1

        def drained() -> Iterator[Message | None]:
            last, batches = time.monotonic(), -1
            while True:
                try:
                    yield source.queue.get(timeout=tick)
                    last = time.monotonic()
                    continue
                except queue.Empty:
                    yield None  # the pipeline writes and acks what it holds
                if source.lost.is_set():
                    raise DrainError(
                        f"the connection as {client_id} broke while draining; is that worker "
                        "still running? Stop it and drain again (nothing was lost)"
                    )
                if pipeline.pending or pipeline.stats.batches != batches:
                    last, batches = time.monotonic(), pipeline.stats.batches
                elif source.unsubscribed.is_set() and time.monotonic() - last >= quiet_s:
                    return

        pipeline.run(drained())
    finally:
        source.stop()
    _end_session(endpoint, client_id, connect_timeout_s)
    log.info(
        "ingest: drained %s: %d messages, %d readings stored, %d dead letters; session ended",
        client_id,
        pipeline.stats.messages,
        pipeline.stats.readings_inserted,
        pipeline.stats.dead_letters,
    )
    return pipeline.stats


def _end_session(endpoint: MqttEndpoint, client_id: str, timeout_s: float) -> None:
    """Connect once with a clean session: the broker discards the persistent one (MQTT 3.1.1
    3.1.2.4), with its subscriptions and anything still queued for it."""
    connected = threading.Event()
    client = make_client(endpoint, client_id, clean_session=True)
    client.on_connect = lambda *_a: connected.set()
    connect(client, endpoint)
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise DrainError(f"could not reconnect as {client_id} to end its session")
    finally:
        client.disconnect()
        client.loop_stop()


def run_ingest(
    settings: Settings,
    endpoint: MqttEndpoint,
    stop: threading.Event,
    *,
    engine: Engine | None = None,
    client_id: str | None = None,
    on_stats: Callable[[IngestStats], None] | None = None,
    ready: threading.Event | None = None,
    metrics: IngestMetrics | None = None,
) -> IngestStats:
    """Ingest until ``stop`` is set, then flush, ack, disconnect and return the counters.
    ``metrics`` (docs/observability.md) counts what the pipeline and the connection do."""
    client_id = client_id or worker_client_id(settings)
    engine = engine or make_engine(settings.resolved_database_url)
    pipeline = Pipeline(engine, settings, metrics=metrics)
    if not pipeline.directory.ensure_loaded(stop.is_set):  # waits (retrying) for the store
        return pipeline.stats
    source = MqttSource(settings, endpoint, client_id, metrics)
    source.start()
    reporter = _Reporter(pipeline.stats, on_stats)
    if ready is not None:
        source.subscribed.wait(10)
        ready.set()

    tick = settings.ingest_idle_flush_s or 0.1

    def ticking() -> Iterator[Message | None]:
        for item in source.messages(stop, tick=tick):
            yield item
            reporter.maybe()

    try:
        pipeline.run(ticking())
    finally:
        source.stop()
        # anything paho delivered while disconnecting is unacked and will be redelivered
    reporter.maybe(force=True)
    return pipeline.stats
