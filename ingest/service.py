"""``its ingest``: the MQTT source feeding :class:`ingest.pipeline.Pipeline`.

paho's network thread only puts messages on a queue; this thread validates, batches, writes and
acks. Acks are manual and sent after the commit, on a persistent session (clean_session False,
a stable client id), so a crash before a commit means redelivery, never loss; the reading key
makes that redelivery harmless.
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

log = logging.getLogger("its.ingest")
REPORT_EVERY_S = 10.0


def default_client_id(settings: Settings) -> str:
    """Stable per host and prefix, so a restarted worker resumes its persistent session."""
    return f"its-ingest-{socket.gethostname()}-{settings.topic_prefix.replace('/', '-')}"[:128]


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

    def __init__(self, settings: Settings, endpoint: MqttEndpoint, client_id: str) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.queue: queue.Queue[Message] = queue.Queue(maxsize=200_000)
        self.subscribed = threading.Event()
        self.client = make_client(endpoint, client_id, clean_session=False, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_disconnect = self._on_disconnect
        self.client.max_inflight_messages_set(1000)

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("ingest: broker refused the connection: %s", rc)
            return
        topics = subscriptions(self.settings.topic_prefix, self.settings.ingest_share_group)
        client.subscribe([(t, 1) for t in topics])
        log.info("ingest: connected to %s, subscribed to %s", self.endpoint.url, ", ".join(topics))

    def _on_disconnect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("ingest: disconnected from broker (%s); paho reconnects", rc)

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


def run_ingest(
    settings: Settings,
    endpoint: MqttEndpoint,
    stop: threading.Event,
    *,
    engine: Engine | None = None,
    client_id: str | None = None,
    on_stats: Callable[[IngestStats], None] | None = None,
    ready: threading.Event | None = None,
) -> IngestStats:
    """Ingest until ``stop`` is set, then flush, ack, disconnect and return the counters."""
    engine = engine or make_engine(settings.resolved_database_url)
    pipeline = Pipeline(engine, settings)
    source = MqttSource(settings, endpoint, client_id or default_client_id(settings))
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
