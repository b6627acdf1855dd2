"""Prometheus metrics of ingest and the alerts evaluator (docs/observability.md).

Each process builds its metrics on its own :class:`~prometheus_client.CollectorRegistry`
rather than on the client library's global one: tests build several apps and pipelines in one
process, and ``its up`` puts ingest, alerts and web on the web process's registry, served at its
``/metrics``. ``its ingest`` and ``its alerts`` serve theirs with the client library's own HTTP
server (:func:`serve`) when ``ITS_METRICS_PORT`` is set.

Label values come from small fixed sets (a dead letter's reason class, a rule name, a route
template), never from what a sender or a client wrote, so nobody can blow up the number of time
series by sending odd topics or requesting odd paths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# A batch holds up to ITS_INGEST_BATCH_SIZE rows (default 500, 2000 in docker-compose.yml).
BATCH_ROWS_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000)
COMMIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# Dead-letter reason classes, the first whose marker the reason holds (its/contract.py and
# ingest/pipeline.py write the reasons). Order matters: a gateway reason quotes item reasons.
DEAD_LETTER_CLASSES: tuple[tuple[str, str], ...] = (
    ("gateway_items", "gateway items rejected"),
    ("internal", "internal error"),
    ("store_refused", "the store refused"),
    ("too_large", "exceeds the limit"),
    ("station_mismatch", "does not match the topic"),
    ("topic", "topic"),
    ("json", "invalid JSON"),
    ("unknown_station", "unknown station"),
    ("lanes", "lanes; got lane"),
    ("too_old", "older than the raw retention"),
)
OTHER = "schema"  # wrong types, missing fields, out-of-range values: the contract's schema


def dead_letter_class(reason: str) -> str:
    """The fixed class of a dead letter's reason, for the ``reason`` label."""
    for name, marker in DEAD_LETTER_CLASSES:
        if marker in reason:
            return name
    return OTHER


class IngestMetrics:
    """What an ingest worker counts; :class:`ingest.pipeline.Pipeline` calls it per batch."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "its_ingest_messages", "MQTT messages taken in (stored, duplicate or dead-lettered).",
            registry=registry,
        )  # fmt: skip
        self.readings = Counter(
            "its_ingest_readings_inserted", "Readings (one per lane) newly stored.",
            registry=registry,
        )  # fmt: skip
        self.duplicates = Counter(
            "its_ingest_duplicates",
            "Readings already stored (a redelivery or a resend), ignored by the reading key.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "its_ingest_dead_letters", "Messages stored as dead letters, by reason class.",
            ["reason"], registry=registry,
        )  # fmt: skip
        for name, _marker in (*DEAD_LETTER_CLASSES, (OTHER, "")):
            self.dead_letters.labels(name)  # every class shows, at 0, from the start
        self.states = Counter(
            "its_ingest_station_states", "Station state messages stored.", registry=registry
        )
        self.write_errors = Counter(
            "its_ingest_write_errors",
            "Failed batch writes (retried, or the batch written message by message).",
            registry=registry,
        )
        self.batch_rows = Histogram(
            "its_ingest_batch_rows", "Readings per committed batch.",
            buckets=BATCH_ROWS_BUCKETS, registry=registry,
        )  # fmt: skip
        self.commit_seconds = Histogram(
            "its_ingest_commit_seconds", "Time to write and commit one batch.",
            buckets=COMMIT_SECONDS_BUCKETS, registry=registry,
        )  # fmt: skip
        self.newest_reading = Gauge(
            "its_ingest_newest_reading_timestamp_seconds",
            "Interval start of the newest reading stored (Unix time); 0 before the first.",
            registry=registry,
        )
        self._newest = 0.0
        self.lag = Gauge(
            "its_ingest_lag_seconds",
            "Wall clock minus the newest stored reading's interval start, at scrape time "
            "(NaN before the first reading).",
            registry=registry,
        )
        self.lag.set_function(self._lag)
        self.connected = Gauge(
            "its_ingest_broker_connected", "1 while connected to the MQTT broker, else 0.",
            registry=registry,
        )  # fmt: skip
        self.disconnects = Counter(
            "its_ingest_broker_disconnects", "Unexpected losses of the broker connection.",
            registry=registry,
        )  # fmt: skip

    def _lag(self) -> float:
        return time.time() - self._newest if self._newest else float("nan")

    def batch(
        self,
        *,
        messages: int,
        rows: int,
        inserted: int,
        dead_reasons: Iterable[str],
        states: int,
        seconds: float,
        newest: datetime | None,
    ) -> None:
        """One committed batch (or one message of a refused batch, written on its own)."""
        self.messages.inc(messages)
        self.readings.inc(inserted)
        self.duplicates.inc(rows - inserted)
        for reason in dead_reasons:
            self.dead_letters.labels(dead_letter_class(reason)).inc()
        self.states.inc(states)
        self.batch_rows.observe(rows)
        self.commit_seconds.observe(seconds)
        if newest is not None and newest.timestamp() > self._newest:
            self._newest = newest.timestamp()
            self.newest_reading.set(self._newest)

    def broker(self, *, connected: bool, expected: bool = False) -> None:
        """The broker connection came up, or went down (``expected``: we disconnected)."""
        if not connected and not expected:
            self.disconnects.inc()
        self.connected.set(1 if connected else 0)


class AlertMetrics:
    """What the alerts evaluator counts; :func:`its.alerts.evaluator.run_evaluator` feeds it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.step_seconds = Histogram(
            "its_alerts_step_seconds", "Time of one evaluation step (as leader).",
            buckets=COMMIT_SECONDS_BUCKETS, registry=registry,
        )  # fmt: skip
        self.steps = Counter(
            "its_alerts_steps", "Evaluation steps run, by outcome (led, standby, failed).",
            ["outcome"], registry=registry,
        )  # fmt: skip
        for outcome in ("led", "standby", "failed"):
            self.steps.labels(outcome)
        self.buckets = Counter(
            "its_alerts_buckets_evaluated", "Complete 5-min buckets evaluated.", registry=registry
        )
        self.buckets_behind = Gauge(
            "its_alerts_buckets_behind",
            "Complete 5-min buckets not yet evaluated after the last step (0 = caught up).",
            registry=registry,
        )
        self.leading = Gauge(
            "its_alerts_leading", "1 while this evaluator leads, else 0.", registry=registry
        )
        self.alerts = Counter(
            "its_alerts_events", "Alert changes by rule and event (raised, severity, cleared).",
            ["rule", "event"], registry=registry,
        )  # fmt: skip
        self.data_time = Gauge(
            "its_alerts_data_time_seconds",
            "The data clock (newest reading) at the last step, Unix time.",
            registry=registry,
        )


def serve(registry: CollectorRegistry, port: int, host: str) -> WSGIServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread (prometheus_client's
    own server, which answers any path); ``shutdown()`` on the result stops it. Raises OSError
    when the port is taken."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics: http://%s:%d/metrics", host, server.server_port)
    return server
