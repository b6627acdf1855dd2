"""History backfill: the last N hours of every station, as fast as the broker takes it.

One client, no Last Will (history has no connection state). Each interval goes out as ONE
gateway batch (``{prefix}/gateways/sim-backfill/obs``, a JSON array of every station's
observation), for two reasons:

- throughput: one MQTT message per interval instead of one per station, so paho's loop (about
  16k QoS 1 messages/s) is no longer the limit;
- nothing lost: the broker acknowledges a publish as soon as it has it, not when ingest has
  stored it, so a slow subscriber's queue grows; Mosquitto drops QoS 1 messages beyond
  ``max_queued_messages`` (default 1000) per subscriber. At one message per interval, 1000
  queued messages are over 8 hours of 30 s data, so a typical backfill fits even if ingest stalls.

With ``ITS_SIM_CREDENTIALS_FILE`` the backfill logs in as the gateway ``sim-backfill``
(``its mqtt credentials --gateway sim-backfill`` creates it).

Ingest must be running (and subscribed) while a backfill runs; a persistent ingest session
(``its ingest`` uses one) also queues while it restarts. ``max_rate`` throttles longer backfills.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ingest.mqtt import connect, make_client
from its.config import MqttEndpoint, Settings
from its.contract import GatewayObsTopic, serialise_gateway_batch
from its.errors import ConfigError
from its.mqtt_auth import gateway_username, load_credentials
from its.network import Network, load_network
from sim.model import DEFAULT_PERIOD_S, TrafficModel, align, intervals
from sim.pacing import InflightWindow
from sim.publisher import ScenarioArg, resolve_scenario

log = logging.getLogger("its.sim")
GATEWAY_ID = "sim-backfill"


@dataclass
class BackfillStats:
    intervals: int = 0
    observations: int = 0
    readings: int = 0  # lane rows the store will hold
    messages: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Observations per second."""
        return self.observations / self.seconds if self.seconds > 0 else 0.0


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} obs/s" if speed else "- obs/s", style="progress.data.speed")


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def backfill(
    settings: Settings,
    endpoint: MqttEndpoint,
    hours: float,
    *,
    end: datetime | None = None,
    seed: int = 0,
    scenario: ScenarioArg = None,
    period_s: int = DEFAULT_PERIOD_S,
    progress: bool = True,
    network: Network | None = None,
    window: int = 20,
    max_rate: float | None = None,
    stop: threading.Event | None = None,
) -> BackfillStats:
    """Publish every interval in [end - hours, end) (end: now, aligned) and wait for the broker's
    acknowledgements. ``window`` bounds unacknowledged batches; ``max_rate`` caps obs/s.
    A scenario given as a function receives the backfill's first interval as the start."""
    if hours <= 0:
        raise ValueError("hours must be > 0")
    net = network or load_network(settings.network_file)
    end = align(end or datetime.now(UTC), period_s)
    start = end - timedelta(hours=hours)
    model = TrafficModel(
        net,
        seed=seed,
        scenario=resolve_scenario(scenario, align(start, period_s)),
        period_s=period_s,
    )
    ticks = list(intervals(start, end, period_s))
    stop = stop or threading.Event()
    stats = BackfillStats()
    topic = str(GatewayObsTopic(settings.topic_prefix, GATEWAY_ID))
    endpoint = _gateway_login(settings, endpoint)
    client = make_client(endpoint, f"its-sim-backfill-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(max(window, 20))
    connect(client, endpoint)
    client.loop_start()
    inflight = InflightWindow(window, stop)
    show = progress and sys.stderr.isatty()
    t0 = time.monotonic()
    try:
        _wait_connected(client, endpoint)
        with _progress(show) as bar:
            task = bar.add_task("backfill", total=len(ticks) * len(net.stations))
            for t in ticks:
                if stop.is_set():
                    break
                batch = model.observations(t)
                if batch:
                    inflight.add(client.publish(topic, serialise_gateway_batch(batch), qos=1))
                    stats.messages += 1
                stats.intervals += 1
                stats.observations += len(batch)
                stats.readings += sum(len(o.lanes) for o in batch)
                bar.update(task, advance=len(net.stations))
                if max_rate:
                    ahead = stats.observations / max_rate - (time.monotonic() - t0)
                    if ahead > 0:
                        stop.wait(ahead)
            if not inflight.drain(timeout=60.0):
                raise ConfigError("the broker did not acknowledge every backfill batch in 60s")
    finally:
        client.disconnect()
        client.loop_stop()
    stats.seconds = time.monotonic() - t0
    log.info(
        "sim: backfilled %s observations (%s readings, %d intervals from %s) in %.1fs, %.0f obs/s",
        f"{stats.observations:,}",
        f"{stats.readings:,}",
        stats.intervals,
        start.isoformat(),
        stats.seconds,
        stats.rate,
    )
    return stats


def _gateway_login(settings: Settings, endpoint: MqttEndpoint) -> MqttEndpoint:
    """The backfill gateway's own login where a credentials file is configured."""
    if settings.sim_credentials_file is None:
        return endpoint
    creds = load_credentials(settings.sim_credentials_file)
    creds.check_prefix(settings.topic_prefix)
    user = creds.get(gateway_username(GATEWAY_ID))
    if user is None:
        raise ConfigError(
            f"{settings.sim_credentials_file} has no login for the backfill gateway: run "
            f"`its mqtt credentials --gateway {GATEWAY_ID}`"
        )
    return endpoint.login(user.username, user.password)


def _wait_connected(client: object, endpoint: MqttEndpoint, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.is_connected():  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise ConfigError(f"could not connect to the MQTT broker at {endpoint.url}")
        time.sleep(0.02)
